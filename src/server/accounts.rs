//! `/v1/accounts`: operator accounts over the API (list, create, delete, log out
//! everywhere), for a live admin key or an owner's session, the powers `docent users` has
//! on the command line.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::api::{blocking, parse_bot_id, resource};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::openapi::*;
use super::views::{AccountView, Deleted};
use crate::accounts::{Account, Role};
use crate::keys::KeyEnv;
use crate::ports::Storage;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/v1/accounts", "GET, POST")
            .route(web::get().to(list_accounts))
            .route(web::post().to(create_account)),
    )
    .service(resource("/v1/accounts/{id}", "DELETE").route(web::delete().to(delete_account)))
    .service(
        resource("/v1/accounts/{id}/sessions", "DELETE").route(web::delete().to(end_sessions)),
    );
}

/// Accounts are people with every bot of both environments in reach: a live admin key
/// manages them, a test key never.
fn require_live_admin(caller: &Caller) -> ApiResult<()> {
    caller.require_admin()?;
    if caller.key.env == KeyEnv::Test {
        return Err(ApiError::forbidden(
            "accounts are managed with a live admin key",
        ));
    }
    Ok(())
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AccountList {
    data: Vec<AccountView>,
}

#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", summary = "List operator accounts (live admin; never their passwords)", security(("bearer" = [])), responses((status = 200, description = "Accounts, oldest first", body = AccountList), ApiErrors))]
pub(crate) async fn list_accounts(
    state: web::Data<AppState>,
    caller: Caller,
) -> ApiResult<HttpResponse> {
    require_live_admin(&caller)?;
    let accounts = state.stored(|store| store.list_accounts()).await?;
    let data = accounts.iter().map(AccountView::from).collect();
    Ok(HttpResponse::Ok().json(AccountList { data }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAccount {
    /// The login name (normalised: trimmed, lowercased).
    email: String,
    /// At least 12 characters, at most 1,024 bytes; stored only as an argon2id hash.
    password: String,
    /// `owner` (everything an admin key may do) or `agent` (the inbox and conversations of
    /// its bots).
    role: String,
    /// The bots an agent works on (at least one; none for an owner).
    #[serde(default)]
    bots: Vec<String>,
}

#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", summary = "Create an operator account (live admin)", request_body = NewAccount, security(("bearer" = [])), responses((status = 201, description = "Created", body = AccountView), ApiErrors))]
pub(crate) async fn create_account(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewAccount>,
) -> ApiResult<HttpResponse> {
    require_live_admin(&caller)?;
    let body = body.into_inner();
    let role = Role::parse(&body.role).map_err(|m| ApiError::bad_request("invalid_role", m))?;
    let bots = body
        .bots
        .iter()
        .map(|b| parse_bot_id(b))
        .collect::<ApiResult<Vec<_>>>()?;
    for bot in bots.clone() {
        state.stored(move |store| store.get_bot(&bot)).await?;
    }
    // argon2id takes tens of milliseconds of CPU: off the async workers.
    let account = blocking(move || {
        Account::new(&body.email, &body.password, role, bots)
            .map_err(|e| ApiError::bad_request("invalid_account", format!("{e:#}")))
    })
    .await?;
    let stored = account.clone();
    state
        .stored(move |store| store.create_account(&stored))
        .await?;
    tracing::info!(account = %account.id, role = account.role.as_str(), "account created");
    Ok(HttpResponse::Created().json(AccountView::from(&account)))
}

#[utoipa::path(delete, path = "/v1/accounts/{id}", tag = "accounts", summary = "Delete an operator account (live admin)", params(("id" = String, Path, description = "Account id (acct_…)")), security(("bearer" = [])), responses((status = 200, description = "Deleted", body = Deleted), ApiErrors))]
pub(crate) async fn delete_account(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    require_live_admin(&caller)?;
    let id = path.into_inner();
    on_account(&state, &id, |store, id| {
        Ok(store.delete_account(id)?.then_some(()))
    })
    .await?;
    // Its sessions went with it: open live feeds look again.
    state.keys.announce();
    tracing::info!(account = %id, "account deleted");
    Ok(HttpResponse::Ok().json(Deleted::new(id)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SessionsEnded {
    id: String,
    /// How many sessions were ended.
    ended: usize,
}

#[utoipa::path(delete, path = "/v1/accounts/{id}/sessions", tag = "accounts", summary = "Log an account out everywhere (live admin)", params(("id" = String, Path, description = "Account id (acct_…)")), security(("bearer" = [])), responses((status = 200, description = "Its sessions ended", body = SessionsEnded), ApiErrors))]
pub(crate) async fn end_sessions(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    require_live_admin(&caller)?;
    let id = path.into_inner();
    let ended = on_account(&state, &id, |store, id| match store.get_account(id)? {
        Some(_) => store.delete_sessions(id).map(Some),
        None => Ok(None),
    })
    .await?;
    state.keys.announce();
    tracing::info!(account = %id, ended, "sessions ended");
    Ok(HttpResponse::Ok().json(SessionsEnded { id, ended }))
}

/// Runs `work` on the account `id` names, off the async workers: 404 `account_not_found`
/// when `work` finds none (answers `None`).
async fn on_account<T: Send + 'static>(
    state: &AppState,
    id: &str,
    work: impl FnOnce(&dyn Storage, &str) -> Result<Option<T>, crate::ports::Error> + Send + 'static,
) -> ApiResult<T> {
    let owned = id.to_string();
    let found = state.stored(move |store| work(store, &owned)).await?;
    found.ok_or_else(|| {
        ApiError::not_found("account_not_found", format!("no account with id {id:?}"))
    })
}
