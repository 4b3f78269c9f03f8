//! Leads: `POST /v1/leads` (a visitor's form; public keys may post for their bot and
//! their own conversations) and `GET /v1/leads?bot_id=` (secret keys; JSON pages, or the
//! whole list as CSV with `format=csv`).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::api::{load_bot, load_conversation, parse_bot_id, resource};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
#[allow(unused_imports)]
use super::openapi::*;
use crate::domain::Lead;
use crate::engage::valid_phone;
use crate::services::leads::{self, LeadForm};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/v1/leads", "GET, POST")
            .route(web::get().to(list_leads))
            .route(web::post().to(create_lead)),
    );
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewLead {
    #[schema(required = true, value_type = String, pattern = "^[a-z0-9-]{1,64}$")]
    bot_id: Option<String>,
    /// The conversation the visitor was in (theirs, for a public key).
    conversation_id: Option<String>,
    #[schema(max_length = 200)]
    name: Option<String>,
    /// An email or a phone is required.
    #[schema(max_length = 254)]
    email: Option<String>,
    #[schema(max_length = 32)]
    phone: Option<String>,
    /// Whether the visitor agreed to be contacted; required.
    #[schema(required = true, value_type = bool)]
    consent: Option<bool>,
}

#[utoipa::path(post, path = "/v1/leads", tag = "leads", summary = "Record a visitor's contact details (emits lead.captured)", request_body = NewLead, security(("bearer" = [])), responses((status = 201, description = "The lead", body = super::schemas::Lead), ApiErrors))]
pub(crate) async fn create_lead(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewLead>,
) -> ApiResult<HttpResponse> {
    let started_ms = crate::ids::now_ms();
    let body = body.into_inner();
    let raw_bot = body
        .bot_id
        .ok_or_else(|| ApiError::bad_request("missing_field", "bot_id is required"))?;
    let bot = parse_bot_id(&raw_bot)?;
    let form = LeadForm {
        name: body.name,
        email: body.email,
        phone: body.phone,
        consent: body.consent,
    };
    let contact = form
        .check()
        .map_err(|e| ApiError::bad_request(e.code, e.message))?;
    load_bot(&state, &caller, &bot).await?;
    super::chat::charge_budgets(&state, &caller, &bot)?;
    let conversation = match &body.conversation_id {
        Some(id) => {
            let conversation = load_conversation(&state, &caller, id).await?;
            if conversation.bot_id != bot {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("conversation {id} belongs to bot {}", conversation.bot_id),
                ));
            }
            Some(conversation)
        }
        None => None,
    };
    let lead = leads::form_lead(
        bot,
        contact,
        conversation.as_ref(),
        caller.visitor.as_deref(),
    );
    let stored = lead.clone();
    state
        .stored(move |store| leads::record(store, &stored, conversation, started_ms))
        .await?;
    Ok(HttpResponse::Created().json(&lead))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LeadQuery {
    #[param(required = true, value_type = String, pattern = "^[a-z0-9-]{1,64}$")]
    bot_id: Option<String>,
    /// `json` (default; pages of `limit`) or `csv` (every lead, as a download).
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/leads", tag = "leads", summary = "A bot's leads, oldest first (JSON pages, or CSV)", params(LeadQuery), security(("bearer" = [])), responses((status = 200, description = "Leads", content((LeadList = "application/json"), (String = "text/csv"))), ApiErrors))]
pub(crate) async fn list_leads(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<LeadQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let query = query.into_inner();
    let raw_bot = query
        .bot_id
        .ok_or_else(|| ApiError::bad_request("missing_field", "bot_id is required"))?;
    let bot = parse_bot_id(&raw_bot)?;
    load_bot(&state, &caller, &bot).await?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("format {other:?}: use json or csv"),
            ));
        }
    };
    let limit = super::api::page_limit(query.limit)?;
    let target = bot.clone();
    if csv {
        let leads = state
            .stored(move |store| store.leads(&target, None, usize::MAX))
            .await?;
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                "Content-Disposition",
                format!("attachment; filename=\"leads-{bot}.csv\""),
            ))
            .body(leads_csv(&leads)));
    }
    let cursor = query.cursor;
    let leads = state
        .stored(move |store| store.leads(&target, cursor.as_deref(), limit))
        .await?;
    let next = (leads.len() == limit)
        .then(|| leads.last().map(|l| l.id.clone()))
        .flatten();
    Ok(HttpResponse::Ok().json(LeadList {
        data: leads,
        next_cursor: next,
    }))
}

/// RFC 4180 CSV with a header row. A field that a spreadsheet would run as a formula
/// (starting with `=`, `+`, `-`, `@`, tab or CR) is prefixed with `'`: visitors type these
/// fields.
pub fn leads_csv(leads: &[Lead]) -> String {
    let mut out = String::from(
        "id,created,bot_id,conversation_id,user_id,name,email,phone,consent,obtained\r\n",
    );
    for lead in leads {
        let consent = lead.consent.map(|c| c.to_string()).unwrap_or_default();
        let fields = [
            lead.id.as_str(),
            &lead.created.to_string(),
            lead.bot_id.as_str(),
            lead.conversation_id.as_deref().unwrap_or(""),
            lead.user_id.as_deref().unwrap_or(""),
            lead.name.as_deref().unwrap_or(""),
            lead.email.as_deref().unwrap_or(""),
            lead.phone.as_deref().unwrap_or(""),
            &consent,
            lead.obtained.as_str(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

fn csv_field(value: &str) -> String {
    let mut value = value.to_string();
    // A phone number's leading + is data, not a formula.
    let formula = value.starts_with(['=', '-', '@', '\t', '\r'])
        || (value.starts_with('+') && !valid_phone(&value));
    if formula {
        value.insert(0, '\'');
    }
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_fields_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("Doe, Jane"), "\"Doe, Jane\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("+44 20 7946 0958"), "+44 20 7946 0958");
        assert_eq!(csv_field("+cmd|' /C calc'!A0"), "'+cmd|' /C calc'!A0");
    }
}
