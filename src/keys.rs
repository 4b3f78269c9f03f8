//! API keys: the key format, generation from the OS's randomness, hashing for storage and
//! constant-time verification. The store keeps only `ApiKey` records (hashes); a key's
//! secret exists in clear once, in the response that creates it.
//!
//! Format: `<kind>_<env>_<id><secret>`, e.g. `sk_live_` + 8 base62 characters of id + 32 of
//! secret. `sk` keys are secret (backends), `pk` keys are public widget tokens. The id is
//! the lookup key and is safe to show and log (`key_<id>`); the whole key's sha256 is
//! compared in constant time.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::BotId;

const ID_LEN: usize = 8;
const SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// `sk_`: server-side keys.
    Secret,
    /// `pk_`: widget tokens, limited to one bot's visitor-facing calls from its origins.
    Public,
}

/// Live and test keys are separate worlds: a test key reaches only test bots and a live
/// key only live ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyEnv {
    Live,
    Test,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// Every bot of the key's environment, plus keys and bot management.
    Admin,
    /// Chat, conversations and reads on these bots only.
    Bots(Vec<BotId>),
}

/// A key as stored: no secret, only its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// `key_<id>`: shown in lists and logs.
    pub id: String,
    pub kind: KeyKind,
    pub env: KeyEnv,
    pub scope: KeyScope,
    /// Origins a public key may be used from (`https://site.example`).
    #[serde(default)]
    pub origins: Vec<String>,
    pub name: Option<String>,
    /// hex sha256 of the whole key.
    pub hash: String,
    pub created: u64,
    pub revoked: Option<u64>,
    /// Set when the key was rotated: it stays valid until this unix time.
    pub expires: Option<u64>,
}

impl ApiKey {
    /// The first characters of the key, enough to recognise it (`sk_live_AbCd1234…`).
    pub fn display_prefix(&self) -> String {
        format!(
            "{}_{}_{}…",
            match self.kind {
                KeyKind::Secret => "sk",
                KeyKind::Public => "pk",
            },
            match self.env {
                KeyEnv::Live => "live",
                KeyEnv::Test => "test",
            },
            self.id.trim_start_matches("key_")
        )
    }

    pub fn is_active(&self, now: u64) -> bool {
        self.revoked.is_none() && self.expires.is_none_or(|t| now < t)
    }

    pub fn allows_bot(&self, bot: &BotId) -> bool {
        match &self.scope {
            KeyScope::Admin => true,
            KeyScope::Bots(bots) => bots.contains(bot),
        }
    }
}

/// A key's parts as presented by a client.
#[derive(Debug, PartialEq, Eq)]
pub struct Presented<'a> {
    pub kind: KeyKind,
    pub env: KeyEnv,
    /// The stored record's id (`key_<id>`).
    pub id: String,
    pub whole: &'a str,
}

/// Splits a presented key into its parts; `None` when it is not shaped like a docent key.
pub fn parse(key: &str) -> Option<Presented<'_>> {
    let (kind, rest) = if let Some(rest) = key.strip_prefix("sk_") {
        (KeyKind::Secret, rest)
    } else if let Some(rest) = key.strip_prefix("pk_") {
        (KeyKind::Public, rest)
    } else {
        return None;
    };
    let (env, body) = if let Some(body) = rest.strip_prefix("live_") {
        (KeyEnv::Live, body)
    } else if let Some(body) = rest.strip_prefix("test_") {
        (KeyEnv::Test, body)
    } else {
        return None;
    };
    if body.len() != ID_LEN + SECRET_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(Presented {
        kind,
        env,
        id: format!("key_{}", &body[..ID_LEN]),
        whole: key,
    })
}

/// A new key and its record. The key string is returned once and never stored.
pub fn generate(
    kind: KeyKind,
    env: KeyEnv,
    scope: KeyScope,
    origins: Vec<String>,
    name: Option<String>,
    now: u64,
) -> anyhow::Result<(String, ApiKey)> {
    let body = crate::ids::random_base62(ID_LEN + SECRET_LEN)?;
    let key = format!(
        "{}_{}_{body}",
        match kind {
            KeyKind::Secret => "sk",
            KeyKind::Public => "pk",
        },
        match env {
            KeyEnv::Live => "live",
            KeyEnv::Test => "test",
        }
    );
    let record = ApiKey {
        id: format!("key_{}", &body[..ID_LEN]),
        kind,
        env,
        scope,
        origins,
        name,
        hash: hash(&key),
        created: now,
        revoked: None,
        expires: None,
    };
    Ok((key, record))
}

/// The longest a rotated key stays valid beside its successor: 30 days.
pub const MAX_KEY_OVERLAP_SECS: u64 = 30 * 86_400;

/// Rotation, the one rule the API and the CLI share: a new key with the old one's powers,
/// and the old one expiring `overlap` seconds after `now` (at most `MAX_KEY_OVERLAP_SECS`),
/// or sooner if it was already due to. Returns the new key (shown once), the old record
/// and the new one, to be stored together.
pub fn rotate(mut old: ApiKey, overlap: u64, now: u64) -> Result<(String, ApiKey, ApiKey), String> {
    if overlap > MAX_KEY_OVERLAP_SECS {
        return Err(format!(
            "overlap_seconds is at most {MAX_KEY_OVERLAP_SECS} (30 days)"
        ));
    }
    if !old.is_active(now) {
        return Err(format!("key {} is revoked or expired", old.id));
    }
    let (key, new) = generate(
        old.kind,
        old.env,
        old.scope.clone(),
        old.origins.clone(),
        old.name.clone(),
        now,
    )
    .map_err(|e| e.to_string())?;
    // A key already on its way out keeps its earlier end: rotating it again cannot extend it.
    let end = now + overlap;
    old.expires = Some(old.expires.map_or(end, |t| t.min(end)));
    Ok((key, old, new))
}

pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `presented` is the key `record` was made from, in time independent of where
/// the two differ.
pub fn verify(presented: &Presented<'_>, record: &ApiKey) -> bool {
    let hash = hash(presented.whole);
    let matches: bool = hash.as_bytes().ct_eq(record.hash.as_bytes()).into();
    matches && presented.kind == record.kind && presented.env == record.env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_powers_and_never_extends_an_old_key() {
        let (_, old) = generate(
            KeyKind::Public,
            KeyEnv::Test,
            KeyScope::Bots(vec![BotId::parse("docs").unwrap()]),
            vec!["https://shop.example".into()],
            Some("widget".into()),
            1,
        )
        .unwrap();
        let (key, old, new) = rotate(old, 3_600, 100).unwrap();
        assert!(key.starts_with("pk_test_"));
        assert_eq!(
            (new.kind, new.env, &new.scope),
            (old.kind, old.env, &old.scope)
        );
        assert_eq!((&new.origins, &new.name), (&old.origins, &old.name));
        assert_ne!(new.id, old.id);
        assert_eq!((old.expires, new.expires), (Some(3_700), None));
        // Rotating the outgoing key again ends it no later than before.
        let (_, again, _) = rotate(old.clone(), MAX_KEY_OVERLAP_SECS, 200).unwrap();
        assert_eq!(again.expires, Some(3_700));
        let (_, sooner, _) = rotate(old.clone(), 10, 200).unwrap();
        assert_eq!(sooner.expires, Some(210));
        // Too long an overlap, or a key already over, is refused.
        assert!(rotate(old.clone(), MAX_KEY_OVERLAP_SECS + 1, 200).is_err());
        assert!(rotate(old, 10, 3_700).is_err());
    }

    #[test]
    fn generated_keys_parse_and_verify_and_others_do_not() {
        let (key, record) = generate(
            KeyKind::Secret,
            KeyEnv::Live,
            KeyScope::Admin,
            vec![],
            None,
            1,
        )
        .unwrap();
        assert!(key.starts_with("sk_live_") && key.len() == 8 + 40);
        let presented = parse(&key).unwrap();
        assert_eq!(presented.id, record.id);
        assert!(verify(&presented, &record));
        assert!(!record.hash.contains(&key[8..]));
        // One character changed in the secret part: same id, no match.
        let mut forged = key.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'a' { b'b' } else { b'a' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(!verify(&parse(&forged).unwrap(), &record));
        for bad in [
            "",
            "sk_live_",
            "sk_prod_abc",
            "Bearer x",
            &key[..key.len() - 1],
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        let (pk, public) = generate(
            KeyKind::Public,
            KeyEnv::Test,
            KeyScope::Bots(vec![BotId::parse("docs").unwrap()]),
            vec!["https://site.example".into()],
            None,
            1,
        )
        .unwrap();
        assert!(pk.starts_with("pk_test_"));
        assert_ne!(public.id, record.id);
    }

    #[test]
    fn rotated_keys_expire_and_revoked_keys_stop_at_once() {
        let (_, mut record) = generate(
            KeyKind::Secret,
            KeyEnv::Live,
            KeyScope::Admin,
            vec![],
            None,
            1,
        )
        .unwrap();
        assert!(record.is_active(10));
        record.expires = Some(20);
        assert!(record.is_active(19) && !record.is_active(20));
        record.expires = None;
        record.revoked = Some(5);
        assert!(!record.is_active(10));
    }
}
