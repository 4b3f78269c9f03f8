//! Operator accounts and console sessions in PostgreSQL: the `accounts` rows (the email
//! column unique, as the login name) and `sessions` by token hash with their account.

use anyhow::Context;
use postgres::types::{Json, ToSql};

use super::{PgStore, all, get};
use crate::accounts::{Account, Session};
use crate::ports::{AccountStore, Error, Result};

impl AccountStore for PgStore {
    fn create_account(&self, account: &Account) -> Result<()> {
        self.insert_new(
            "write account",
            "INSERT INTO accounts (id, email, record) VALUES ($1, $2, $3)",
            &[
                &account.id.as_str(),
                &account.email.as_str(),
                &Json(account) as &(dyn ToSql + Sync),
            ],
            || Error::AccountExists(account.email.clone()),
        )
    }

    fn get_account(&self, id: &str) -> Result<Option<Account>> {
        self.client(|c| get(c, "accounts", id))
    }

    fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        let mut found: Vec<Account> =
            self.client(|c| all(c, "accounts", "email = $1", &[&email]))?;
        Ok(found.pop())
    }

    fn list_accounts(&self) -> Result<Vec<Account>> {
        // Ids sort by creation time.
        self.client(|c| all(c, "accounts", "true", &[]))
    }

    fn delete_account(&self, id: &str) -> Result<bool> {
        self.in_transaction(|txn| {
            let removed = txn
                .execute("DELETE FROM accounts WHERE id = $1", &[&id])
                .context("remove account")?;
            txn.execute("DELETE FROM sessions WHERE account = $1", &[&id])
                .context("remove sessions")?;
            Ok(removed > 0)
        })
    }

    fn put_session(&self, session: &Session) -> Result<()> {
        self.execute(
            "write session",
            "INSERT INTO sessions (id, account, record) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[
                &session.id.as_str(),
                &session.account.as_str(),
                &Json(session) as &(dyn ToSql + Sync),
            ],
        )?;
        Ok(())
    }

    fn get_session(&self, id: &str) -> Result<Option<Session>> {
        self.client(|c| get(c, "sessions", id))
    }

    fn delete_session(&self, id: &str) -> Result<bool> {
        let removed = self.execute(
            "remove session",
            "DELETE FROM sessions WHERE id = $1",
            &[&id],
        )?;
        Ok(removed > 0)
    }

    fn delete_sessions(&self, account: &str) -> Result<usize> {
        let removed = self.execute(
            "remove sessions",
            "DELETE FROM sessions WHERE account = $1",
            &[&account],
        )?;
        Ok(removed as usize)
    }

    fn touch_session(&self, id: &str, now: u64) -> Result<bool> {
        // One statement: a logout that came first leaves no row to touch.
        let touched = self.execute(
            "write session",
            "UPDATE sessions SET record = jsonb_set(record, '{last_seen}', \
             to_jsonb(GREATEST((record->>'last_seen')::bigint, $2))) WHERE id = $1",
            &[&id as &(dyn ToSql + Sync), &(now as i64)],
        )?;
        Ok(touched > 0)
    }

    fn delete_expired_sessions(&self, now: u64) -> Result<usize> {
        self.in_transaction(|txn| {
            let rows = txn
                .query(
                    "SELECT record FROM sessions ORDER BY id FOR UPDATE SKIP LOCKED",
                    &[],
                )
                .context("read sessions")?;
            let sessions: Vec<Session> = rows
                .iter()
                .map(|r| r.get::<_, Json<Session>>(0).0)
                .collect();
            let ended: Vec<&str> = sessions
                .iter()
                .filter(|s| !s.is_live(now))
                .map(|s| s.id.as_str())
                .collect();
            txn.execute("DELETE FROM sessions WHERE id = ANY($1)", &[&ended])
                .context("remove sessions")?;
            Ok(ended.len())
        })
    }
}
