//! Operator accounts (people at the console, apart from API keys): the record, its role,
//! email and password rules, and password hashing with argon2id. The store keeps only the
//! PHC hash string; a password exists in clear in the request that sets or checks it.
//!
//! Roles: an **owner** may do everything an admin key may; an **agent** may read and answer
//! the conversations of the bots listed on the account, nothing else. A login is a
//! `Session`: a cookie token whose hash the store keeps, ended by idleness, age, logout or
//! the account's deletion.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use crate::domain::BotId;

/// Passwords shorter than this are refused (NIST SP 800-63B's floor for chosen ones).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longer ones are refused too: hashing is the cost an attacker would make us pay.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Agent,
}

impl Role {
    pub fn parse(raw: &str) -> Result<Role, String> {
        match raw {
            "owner" => Ok(Role::Owner),
            "agent" => Ok(Role::Agent),
            other => Err(format!("unknown role {other:?}: use owner or agent")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Agent => "agent",
        }
    }
}

/// An account as stored: no password, only its argon2id hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// `acct_<ms><random>` (ordered by creation): shown in lists and logs.
    pub id: String,
    /// Normalised (`normalize_email`): the login name, unique.
    pub email: String,
    pub role: Role,
    /// The bots an agent works on (empty for an owner, who sees every bot).
    pub bots: Vec<BotId>,
    /// argon2id in PHC string form (`$argon2id$v=19$m=…`).
    pub password_hash: String,
    /// Unix seconds.
    pub created: u64,
}

impl Account {
    /// A new account with `password` hashed; checks the email, the password and the role's
    /// bots (an owner has none listed, an agent at least one).
    pub fn new(email: &str, password: &str, role: Role, bots: Vec<BotId>) -> anyhow::Result<Self> {
        let email = normalize_email(email).map_err(anyhow::Error::msg)?;
        check_password(password).map_err(anyhow::Error::msg)?;
        match role {
            Role::Owner => anyhow::ensure!(bots.is_empty(), "an owner sees every bot: no --bot"),
            Role::Agent => anyhow::ensure!(!bots.is_empty(), "an agent needs at least one --bot"),
        }
        Ok(Account {
            id: crate::ids::account(),
            email,
            role,
            bots,
            password_hash: hash_password(password)?,
            created: crate::telemetry::unix_now(),
        })
    }

    /// Whether the account may work on `bot`.
    pub fn allows_bot(&self, bot: &BotId) -> bool {
        self.role == Role::Owner || self.bots.contains(bot)
    }
}

/// The login name: trimmed and lowercased, one `@` with something on each side, no spaces
/// or control characters, at most 254 bytes.
pub fn normalize_email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(format!("invalid email address {:?}", raw.trim()))
    }
}

/// Refuses a password too short or too long to accept.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password is too short: use at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is too long: at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(())
}

/// argon2id with OWASP's recommended cost (19 MiB, 2 passes, 1 lane) and a 16-byte salt
/// from the OS CSPRNG.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = hasher()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    Ok(hash.to_string())
}

/// Whether `password` is the one `hash` was made from (argon2's comparison is constant
/// time). A hash that does not parse matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(hash).is_ok_and(|parsed| {
        hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Spends the time a password check takes, for a login whose account does not exist, so
/// the answer's timing does not tell which emails have accounts.
pub fn verify_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default());
    let _ = verify_password(password, hash);
}

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "docent_session";
/// A session ends after this long unused...
pub const SESSION_IDLE_SECS: u64 = 12 * 3600;
/// ...and this long after login, used or not.
pub const SESSION_MAX_SECS: u64 = 7 * 24 * 3600;

/// A console login. The token exists only in the cookie; the store keeps its sha256 as the
/// id, so a copy of the database logs nobody in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// hex sha256 of the token.
    pub id: String,
    pub account: String,
    /// The value state-changing requests must echo in `X-CSRF-Token`.
    pub csrf: String,
    /// Unix seconds.
    pub created: u64,
    pub last_seen: u64,
}

impl Session {
    /// A new session for `account`: its token (`dss_` + 43 base62 from the OS CSPRNG,
    /// about 256 bits) and its record.
    pub fn start(account: &str, now: u64) -> anyhow::Result<(String, Session)> {
        let token = format!("dss_{}", crate::ids::random_base62(43)?);
        let session = Session {
            id: session_id(&token),
            account: account.to_string(),
            csrf: crate::ids::random_base62(32)?,
            created: now,
            last_seen: now,
        };
        Ok((token, session))
    }

    /// When it ends unless used again: idle or absolute, whichever comes first.
    pub fn expires(&self) -> u64 {
        (self.last_seen + SESSION_IDLE_SECS).min(self.created + SESSION_MAX_SECS)
    }

    pub fn is_live(&self, now: u64) -> bool {
        now < self.expires()
    }

    /// Whether `presented` is this session's CSRF token, in constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        presented.as_bytes().ct_eq(self.csrf.as_bytes()).into()
    }
}

/// A session token's id in the store: its sha256, hex. Looking a session up by the hash of
/// what was presented is a lookup, not a comparison of secrets.
pub fn session_id(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_a_fresh_salt_each_time() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_password("correct horse battery", &a));
        assert!(verify_password("correct horse battery", &b));
        assert!(!verify_password("correct horse batterY", &a));
        assert!(!verify_password("", &a));
        assert!(!verify_password("correct horse battery", "not a hash"));
    }

    #[test]
    fn sessions_end_idle_or_old_and_keep_only_the_tokens_hash() {
        let (token, mut session) = Session::start("acct_x", 1_000).unwrap();
        assert!(token.starts_with("dss_") && token.len() == 47, "{token}");
        assert_eq!(session.id, session_id(&token));
        assert!(!session.id.contains(&token[4..]));
        assert!(session.is_live(1_000 + SESSION_IDLE_SECS - 1));
        assert!(!session.is_live(1_000 + SESSION_IDLE_SECS));
        // Use keeps it going, up to its absolute end.
        session.last_seen = 1_000 + SESSION_MAX_SECS - 60;
        assert!(!session.is_live(1_000 + SESSION_MAX_SECS));
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches(""));
        assert!(!session.csrf_matches(&session.csrf[1..]));
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.ORG ").unwrap(),
            "ada@example.org"
        );
        for bad in [
            "",
            "ada",
            "@example.org",
            "ada@",
            "a b@example.org",
            "a@b@c",
            "a\u{7}@b",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_account_checks_its_password_and_its_roles_bots() {
        let bot = BotId::parse("help").unwrap();
        assert!(Account::new("a@b.c", "short", Role::Owner, vec![]).is_err());
        assert!(Account::new("a@b.c", &"x".repeat(2000), Role::Owner, vec![]).is_err());
        assert!(Account::new("a@b.c", "long enough pass", Role::Agent, vec![]).is_err());
        assert!(Account::new("a@b.c", "long enough pass", Role::Owner, vec![bot.clone()]).is_err());
        let agent =
            Account::new("A@B.c", "long enough pass", Role::Agent, vec![bot.clone()]).unwrap();
        assert_eq!(agent.email, "a@b.c");
        assert!(agent.id.starts_with("acct_"));
        assert!(agent.allows_bot(&bot));
        assert!(!agent.allows_bot(&BotId::parse("other").unwrap()));
        assert!(!agent.password_hash.contains("long enough pass"));
        assert!(verify_password("long enough pass", &agent.password_hash));
    }
}
