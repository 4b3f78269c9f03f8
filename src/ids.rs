//! Every identifier docent mints, in one place: `prefix_` + random base62 from the OS
//! CSPRNG, or, where ids must sort by creation (events, leads), `prefix_` + unix ms in hex
//! + random. Also the millisecond clock those ids and the outbox's schedule read.

use std::sync::atomic::{AtomicU64, Ordering};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters of base62 from the OS CSPRNG, uniformly distributed.
pub fn random_base62(len: usize) -> anyhow::Result<String> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        for &b in &buf {
            // 248 = 4 * 62: bytes at or above it would favour the first characters.
            if b < 248 && out.len() < len {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `len` random characters for an id. Ids are not secrets: should the OS refuse
/// randomness, the clock and a process-wide counter still make them unique here.
fn unique(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    random_base62(len).unwrap_or_else(|_| {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let fallback = format!("{:016x}{n:08x}", now_ms());
        fallback.chars().rev().take(len).collect()
    })
}

/// `prefix_` + 12 hex digits of unix ms + 12 random base62: unique and time-ordered.
pub fn time_ordered(prefix: &str) -> String {
    format!("{prefix}_{:012x}{}", now_ms(), unique(12))
}

/// `acct_…`, ordered by creation.
pub fn account() -> String {
    time_ordered("acct")
}

/// `conv_…`
pub fn conversation() -> String {
    format!("conv_{}", unique(20))
}

/// `msg_…`
pub fn message() -> String {
    format!("msg_{}", unique(20))
}

/// `lead_…`, in creation order.
pub fn lead() -> String {
    time_ordered("lead")
}

/// `evt_…`, in creation order: the same on every delivery attempt.
pub fn event() -> String {
    time_ordered("evt")
}

/// `whk_…`
pub fn webhook() -> String {
    format!("whk_{}", unique(16))
}

/// `job_…`
pub fn job() -> String {
    format!("job_{}", unique(16))
}

/// `gq_…`: a golden question.
pub fn golden() -> String {
    format!("gq_{}", unique(16))
}

/// `ing_…` for an ingest run, `rei_…` for a reindex: what their staged chunks are kept
/// under until the commit.
/// `ans_…`: a curated answer.
pub fn answer() -> String {
    format!("ans_{}", unique(16))
}

pub fn ingest(prefix: &str) -> String {
    format!("{prefix}_{}", unique(12))
}

/// `req_…`, a request id where the client sent none.
pub fn request() -> String {
    format!("req_{}", unique(16))
}

/// `chatcmpl-…`, an OpenAI-style completion id.
pub fn completion() -> String {
    format!("chatcmpl-{}", unique(24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_time_ordered_ones_sort_by_creation() {
        let (a, b) = (conversation(), message());
        assert!(a.starts_with("conv_") && a.len() == 25, "{a}");
        assert!(b.starts_with("msg_") && b.len() == 24, "{b}");
        assert_ne!(conversation(), a);
        let first = lead();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = lead();
        assert!(first < second, "{first} {second}");
        assert!(event().starts_with("evt_"));
        assert!(completion().starts_with("chatcmpl-"));
    }
}
