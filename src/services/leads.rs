//! A lead from a form (`POST /v1/leads`): the contact details checked, and the lead
//! written with its `lead.captured` event, onto its conversation when it has one.

use crate::domain::{BotId, Conversation, Lead, LeadSource};
use crate::engage::{valid_email, valid_phone};
use crate::ports::{Storage, TurnExtras};
use crate::telemetry::unix_now;

/// What a visitor typed into a lead form.
#[derive(Debug, Default)]
pub struct LeadForm {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub consent: Option<bool>,
}

/// Contact details that passed the checks: trimmed, blanks dropped, an email or a phone.
#[derive(Debug, PartialEq)]
pub struct Contact {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub consent: bool,
}

/// Why a form was refused: a stable code (`missing_field`, `invalid_email`,
/// `invalid_phone`, `invalid_request`) and a message.
#[derive(Debug, PartialEq)]
pub struct InvalidLead {
    pub code: &'static str,
    pub message: &'static str,
}

fn refuse(code: &'static str, message: &'static str) -> InvalidLead {
    InvalidLead { code, message }
}

fn clean(field: Option<String>) -> Option<String> {
    field
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl LeadForm {
    /// The form's contact details, or why they cannot be kept.
    pub fn check(self) -> Result<Contact, InvalidLead> {
        let consent = self
            .consent
            .ok_or_else(|| refuse("missing_field", "consent (true or false) is required"))?;
        let (name, email, phone) = (clean(self.name), clean(self.email), clean(self.phone));
        if email.is_none() && phone.is_none() {
            return Err(refuse("missing_field", "a lead needs an email or a phone"));
        }
        if email.as_deref().is_some_and(|e| !valid_email(e)) {
            return Err(refuse("invalid_email", "email is not a valid address"));
        }
        if phone.as_deref().is_some_and(|p| !valid_phone(p)) {
            return Err(refuse(
                "invalid_phone",
                "phone must be 7 to 15 digits, with spaces, dashes, dots, parentheses or a leading +",
            ));
        }
        if name
            .as_ref()
            .is_some_and(|n| n.chars().count() > 200 || n.chars().any(char::is_control))
        {
            return Err(refuse(
                "invalid_request",
                "name must be up to 200 printable characters",
            ));
        }
        Ok(Contact {
            name,
            email,
            phone,
            consent,
        })
    }
}

/// A form lead for `bot`, from the visitor `visitor` (a widget's) or in `conversation`.
/// A visitor's lead is theirs even before any conversation, so erasing the visitor
/// erases it.
pub fn form_lead(
    bot: BotId,
    contact: Contact,
    conversation: Option<&Conversation>,
    visitor: Option<&str>,
) -> Lead {
    Lead {
        id: crate::ids::lead(),
        bot_id: bot,
        conversation_id: conversation.map(|c| c.id.clone()),
        user_id: conversation
            .and_then(|c| c.user_id.clone())
            .or_else(|| visitor.map(str::to_string)),
        name: contact.name,
        email: contact.email,
        phone: contact.phone,
        consent: Some(contact.consent),
        obtained: LeadSource::Form,
        created: unix_now(),
    }
}

/// Writes `lead` with its `lead.captured` event in one transaction: with its
/// conversation, the conversation learns its lead in the same commit. Nothing is written
/// for a bot, conversation or user erased since `started_ms`.
pub fn record(
    store: &dyn Storage,
    lead: &Lead,
    conversation: Option<Conversation>,
    started_ms: u64,
) -> crate::ports::Result<()> {
    let Some(mut conversation) = conversation else {
        return store.put_lead(lead, started_ms);
    };
    conversation.updated = unix_now();
    conversation.lead_id = Some(lead.id.clone());
    let extras = TurnExtras {
        lead: Some(lead.clone()),
        started_ms: Some(started_ms),
        ..TurnExtras::default()
    };
    store.append_turn(&conversation, &[], extras)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::ports::{ContentStore, ConversationStore, OutboxStore};
    use crate::store::Store;

    fn form(email: &str, phone: &str, consent: Option<bool>) -> LeadForm {
        LeadForm {
            name: Some("  Ana  ".into()),
            email: Some(email.into()),
            phone: Some(phone.into()),
            consent,
        }
    }

    #[test]
    fn a_form_needs_consent_and_a_valid_email_or_phone() {
        let contact = form(" ana@example.com ", "", Some(true)).check().unwrap();
        assert_eq!(
            contact,
            Contact {
                name: Some("Ana".into()),
                email: Some("ana@example.com".into()),
                phone: None,
                consent: true,
            }
        );
        let code = |f: LeadForm| f.check().unwrap_err().code;
        assert_eq!(code(form("ana@example.com", "", None)), "missing_field");
        assert_eq!(code(form(" ", " ", Some(false))), "missing_field");
        assert_eq!(
            code(form("not an address", "", Some(true))),
            "invalid_email"
        );
        assert_eq!(code(form("", "12", Some(true))), "invalid_phone");
        let long = LeadForm {
            name: Some("a".repeat(201)),
            ..form("ana@example.com", "", Some(true))
        };
        assert_eq!(code(long), "invalid_request");
    }

    #[test]
    fn a_lead_with_a_conversation_is_written_onto_it_with_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bot = BotId::parse("docs").unwrap();
        store.create_bot(&fixtures::bot("docs")).unwrap();
        store
            .put_webhook(&crate::ports::Webhook {
                id: "whk_all".into(),
                bot_id: bot.clone(),
                url: "http://127.0.0.1:9/hook".into(),
                events: vec!["*".into()],
                secret: "whsec_x".into(),
                previous_secret: None,
                previous_until: None,
                created: 1,
            })
            .unwrap();
        let conversation = fixtures::conversation("conv_1", "docs", Some("visitor_1"));
        store.append_messages(&conversation, &[]).unwrap();
        let contact = form("ana@example.com", "", Some(true)).check().unwrap();
        let lead = form_lead(bot.clone(), contact, Some(&conversation), None);
        assert_eq!(lead.user_id.as_deref(), Some("visitor_1"));
        record(&store, &lead, Some(conversation), crate::ids::now_ms()).unwrap();
        let stored = store.get_conversation("conv_1").unwrap();
        assert_eq!(stored.lead_id.as_ref(), Some(&lead.id));
        assert_eq!(
            store.leads(&bot, None, 10).unwrap(),
            std::slice::from_ref(&lead)
        );
        // The same commit wrote its event, with a delivery to the bot's webhook.
        let due = store
            .due_deliveries(u64::MAX, 10, &Default::default(), 0)
            .unwrap();
        let kinds: Vec<&str> = due.iter().map(|d| d.event.kind.as_str()).collect();
        assert_eq!(kinds, ["lead.captured"]);
        assert_eq!(
            due[0].event.data["lead"]["id"],
            lead.id.as_str(),
            "{:?}",
            due[0]
        );

        // Without a conversation: the visitor's own lead.
        let contact = form("", "+1 555 010 0000", Some(false)).check().unwrap();
        let alone = form_lead(bot.clone(), contact, None, Some("visitor_2"));
        record(&store, &alone, None, crate::ids::now_ms()).unwrap();
        let leads = store.leads(&bot, None, 10).unwrap();
        assert_eq!(leads.len(), 2);
        let stored = leads.iter().find(|l| l.id == alone.id).unwrap();
        assert_eq!(stored.user_id.as_deref(), Some("visitor_2"));
        assert_eq!(stored.consent, Some(false));
        assert_eq!(stored.conversation_id, None);
    }
}
