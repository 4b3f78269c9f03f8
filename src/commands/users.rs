//! `docent users`: operator accounts from the command line (create, list, delete), and
//! reading a new password without it ever being an argument.

use std::io::{BufRead, IsTerminal};

use serde_json::json;

use crate::accounts::{Account, Role};
use crate::cli::UsersCommand;
use crate::config::Config;
use crate::domain::BotId;
use crate::ports::Storage;
use crate::server::views::AccountView;

pub fn users(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    let store = crate::app::open_store(config)?;
    match command {
        UsersCommand::Create {
            email,
            role,
            bots,
            json,
        } => create(&*store, &email, &role, &bots, json),
        UsersCommand::List { json } => list(&*store, json),
        UsersCommand::Delete { account, json } => delete(&*store, &account, json),
    }
}

fn create(
    store: &dyn Storage,
    email: &str,
    role: &str,
    bots: &[String],
    json: bool,
) -> anyhow::Result<()> {
    let role = Role::parse(role).map_err(anyhow::Error::msg)?;
    let bots = bots
        .iter()
        .map(|b| BotId::parse(b).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for bot in &bots {
        store.get_bot(bot)?;
    }
    let password = new_password()?;
    let account = Account::new(email, &password, role, bots)?;
    store.create_account(&account)?;
    if json {
        println!("{}", serde_json::to_value(AccountView::from(&account))?);
    } else {
        println!(
            "created {} ({}, {})",
            account.id,
            account.role.as_str(),
            account.email
        );
    }
    Ok(())
}

fn list(store: &dyn Storage, json: bool) -> anyhow::Result<()> {
    let accounts = store.list_accounts()?;
    if json {
        let data: Vec<AccountView> = accounts.iter().map(AccountView::from).collect();
        println!("{}", json!({ "data": data }));
    } else if accounts.is_empty() {
        println!("no accounts yet: `docent users create --email … --role owner` makes one");
    } else {
        for account in &accounts {
            let bots: Vec<&str> = account.bots.iter().map(BotId::as_str).collect();
            println!(
                "{:<18} {:<6} {:<32} {}",
                account.id,
                account.role.as_str(),
                account.email,
                bots.join(",")
            );
        }
    }
    Ok(())
}

fn delete(store: &dyn Storage, which: &str, json: bool) -> anyhow::Result<()> {
    let account = if which.starts_with("acct_") {
        store.get_account(which)?
    } else {
        let email = crate::accounts::normalize_email(which).map_err(anyhow::Error::msg)?;
        store.account_by_email(&email)?
    };
    let account = account.ok_or_else(|| anyhow::anyhow!("no account {which:?}"))?;
    store.delete_account(&account.id)?;
    if json {
        println!("{}", json!({ "id": account.id, "deleted": true }));
    } else {
        println!("deleted {} ({})", account.id, account.email);
    }
    Ok(())
}

/// The new account's password: `DOCENT_PASSWORD`, else asked twice on a terminal without
/// echo, else the first line of standard input (a pipe or a file).
fn new_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("DOCENT_PASSWORD") {
        return Ok(password);
    }
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Password again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(
        !password.is_empty(),
        "no password: set DOCENT_PASSWORD or pipe it on standard input"
    );
    Ok(password)
}
