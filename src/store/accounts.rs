//! Operator accounts in redb: the records by id, each normalised email's account id (the
//! login lookup, and what keeps emails unique), and console sessions by token hash.

use anyhow::Context;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, decode, encode};
use crate::accounts::{Account, Session};
use crate::ports::{AccountStore, Error, Result};

pub(super) const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
const ACCOUNT_EMAILS: TableDefinition<&str, &str> = TableDefinition::new("account_emails");
/// Session id (the token's sha256) → session.
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

/// Creates the account tables (called from `Store::open`'s schema transaction).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(ACCOUNTS).context("accounts table")?;
    txn.open_table(ACCOUNT_EMAILS)
        .context("account_emails table")?;
    txn.open_table(SESSIONS).context("sessions table")?;
    Ok(())
}

impl AccountStore for Store {
    fn create_account(&self, account: &Account) -> Result<()> {
        let txn = self.db.begin_write().context("begin write")?;
        {
            let mut emails = txn.open_table(ACCOUNT_EMAILS).context("open emails")?;
            if emails
                .get(account.email.as_str())
                .context("read email")?
                .is_some()
            {
                return Err(Error::AccountExists(account.email.clone()));
            }
            emails
                .insert(account.email.as_str(), account.id.as_str())
                .context("write email")?;
            let mut accounts = txn.open_table(ACCOUNTS).context("open accounts")?;
            accounts
                .insert(account.id.as_str(), encode(account)?.as_slice())
                .context("write account")?;
        }
        txn.commit().context("failed to commit account")?;
        Ok(())
    }

    fn get_account(&self, id: &str) -> Result<Option<Account>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(ACCOUNTS).context("open accounts")?;
        let raw = table.get(id).context("read account")?;
        raw.map(|raw| decode(raw.value())).transpose()
    }

    fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        let id = {
            let txn = self.db.begin_read().context("begin read")?;
            let emails = txn.open_table(ACCOUNT_EMAILS).context("open emails")?;
            let id = emails.get(email).context("read email")?;
            id.map(|id| id.value().to_string())
        };
        match id {
            Some(id) => self.get_account(&id),
            None => Ok(None),
        }
    }

    fn list_accounts(&self) -> Result<Vec<Account>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(ACCOUNTS).context("open accounts")?;
        // Ids sort by creation time.
        let mut out: Vec<Account> = Vec::new();
        for entry in table.iter().context("iterate accounts")? {
            let (_, raw) = entry.context("read account")?;
            out.push(decode(raw.value())?);
        }
        Ok(out)
    }

    fn delete_account(&self, id: &str) -> Result<bool> {
        let txn = self.db.begin_write().context("begin write")?;
        let existed = {
            let mut accounts = txn.open_table(ACCOUNTS).context("open accounts")?;
            let removed = accounts.remove(id).context("remove account")?;
            let account: Option<Account> = removed.map(|raw| decode(raw.value())).transpose()?;
            if let Some(account) = &account {
                let mut emails = txn.open_table(ACCOUNT_EMAILS).context("open emails")?;
                emails
                    .remove(account.email.as_str())
                    .context("remove email")?;
                delete_sessions_in(&txn, |s| s.account == account.id)?;
            }
            account.is_some()
        };
        txn.commit().context("failed to commit account removal")?;
        Ok(existed)
    }

    fn put_session(&self, session: &Session) -> Result<()> {
        let txn = self.db.begin_write().context("begin write")?;
        {
            let mut sessions = txn.open_table(SESSIONS).context("open sessions")?;
            sessions
                .insert(session.id.as_str(), encode(session)?.as_slice())
                .context("write session")?;
        }
        txn.commit().context("failed to commit session")?;
        Ok(())
    }

    fn get_session(&self, id: &str) -> Result<Option<Session>> {
        let txn = self.db.begin_read().context("begin read")?;
        let table = txn.open_table(SESSIONS).context("open sessions")?;
        let raw = table.get(id).context("read session")?;
        raw.map(|raw| decode(raw.value())).transpose()
    }

    fn delete_session(&self, id: &str) -> Result<bool> {
        let txn = self.db.begin_write().context("begin write")?;
        let existed = {
            let mut sessions = txn.open_table(SESSIONS).context("open sessions")?;
            sessions.remove(id).context("remove session")?.is_some()
        };
        txn.commit().context("failed to commit logout")?;
        Ok(existed)
    }

    fn delete_sessions(&self, account: &str) -> Result<usize> {
        let txn = self.db.begin_write().context("begin write")?;
        let ended = delete_sessions_in(&txn, |s| s.account == account)?;
        txn.commit()
            .context("failed to commit session revocation")?;
        Ok(ended)
    }

    fn touch_session(&self, id: &str, now: u64) -> Result<bool> {
        let txn = self.db.begin_write().context("begin write")?;
        let found = {
            let mut sessions = txn.open_table(SESSIONS).context("open sessions")?;
            let stored: Option<Session> = sessions
                .get(id)
                .context("read session")?
                .map(|raw| decode(raw.value()))
                .transpose()?;
            if let Some(mut session) = stored.clone() {
                session.last_seen = session.last_seen.max(now);
                sessions
                    .insert(id, encode(&session)?.as_slice())
                    .context("write session")?;
            }
            stored.is_some()
        };
        txn.commit().context("failed to commit session use")?;
        Ok(found)
    }

    fn delete_expired_sessions(&self, now: u64) -> Result<usize> {
        let txn = self.db.begin_write().context("begin write")?;
        let ended = delete_sessions_in(&txn, |s| !s.is_live(now))?;
        txn.commit().context("failed to commit session sweep")?;
        Ok(ended)
    }
}

/// Takes `bot` out of every agent's bots, in `txn` (the bot is being deleted).
pub(super) fn forget_bot_in(txn: &WriteTransaction, bot: &crate::domain::BotId) -> Result<()> {
    super::rewrite_in(txn, ACCOUNTS, |account: &mut Account| {
        super::without(&mut account.bots, bot)
    })?;
    Ok(())
}

/// Removes the sessions `ends` picks within `txn` (a scan: sessions are few, one per live
/// login, ended ones swept at each login).
fn delete_sessions_in(txn: &WriteTransaction, ends: impl Fn(&Session) -> bool) -> Result<usize> {
    let mut sessions = txn.open_table(SESSIONS).context("open sessions")?;
    let mut ids = Vec::new();
    for entry in sessions.iter().context("iterate sessions")? {
        let (id, raw) = entry.context("read session")?;
        let session: Session = decode(raw.value())?;
        if ends(&session) {
            ids.push(id.value().to_string());
        }
    }
    for id in &ids {
        sessions.remove(id.as_str()).context("remove session")?;
    }
    Ok(ids.len())
}
