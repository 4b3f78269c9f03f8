//! Operator accounts in redb: the records by id, and each normalised email's account id
//! (the login lookup, and what keeps emails unique).

use anyhow::Context;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, decode, encode};
use crate::accounts::Account;
use crate::ports::{AccountStore, Error, Result};

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
const ACCOUNT_EMAILS: TableDefinition<&str, &str> = TableDefinition::new("account_emails");

/// Creates the account tables (called from `Store::open`'s schema transaction).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(ACCOUNTS).context("accounts table")?;
    txn.open_table(ACCOUNT_EMAILS)
        .context("account_emails table")?;
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
            }
            account.is_some()
        };
        txn.commit().context("failed to commit account removal")?;
        Ok(existed)
    }
}
