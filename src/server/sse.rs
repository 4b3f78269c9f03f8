//! Server-Sent Events as docent writes them, for the chat stream and the conversation
//! feed alike: one frame format, one keep-alive comment, one response.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::web::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

/// How often an idle stream carries a keep-alive comment, so proxies and browsers keep it
/// open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The comment line a heartbeat sends.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The comment a stream sends while it has nothing to show (the claim check holds a
/// sentence back): only a write finds out that the client has gone.
pub const PROBE: &[u8] = b":\n\n";

/// Least time between two probes of one stream.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// A `data:` frame holding `value` as one line of JSON.
pub fn data(value: &impl Serialize) -> Bytes {
    with_id(None, value)
}

/// A `data:` frame with the `id:` a client resumes from (`Last-Event-ID`).
pub fn with_id(id: Option<u32>, value: &impl Serialize) -> Bytes {
    // JSON escapes line breaks inside strings, so the value stays one `data:` line.
    let json = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    match id {
        Some(id) => Bytes::from(format!("id: {id}\ndata: {json}\n\n")),
        None => Bytes::from(format!("data: {json}\n\n")),
    }
}

/// Who sends the keep-alive comments of a stream.
pub enum Heartbeat {
    /// The response, every `HEARTBEAT`.
    Here,
    /// The producer itself (a feed that must notice a client that stopped reading).
    Producer,
}

/// The `text/event-stream` response carrying what `frames` receives, until its sender
/// goes.
pub fn response(frames: mpsc::Receiver<Bytes>, heartbeat: Heartbeat) -> HttpResponse {
    let ticks = match heartbeat {
        Heartbeat::Here => Some(tokio::time::interval_at(
            tokio::time::Instant::now() + HEARTBEAT,
            HEARTBEAT,
        )),
        Heartbeat::Producer => None,
    };
    let body = futures::stream::unfold((frames, ticks), |(mut frames, mut ticks)| async move {
        tokio::select! {
            biased;
            next = frames.recv() => {
                next.map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), (frames, ticks)))
            }
            () = tick(&mut ticks) => Some((Ok(Bytes::from_static(KEEP_ALIVE)), (frames, ticks))),
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// The next heartbeat, or never.
async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_one_data_line_with_an_optional_id_and_a_blank_line_after() {
        // A line break inside a value stays escaped: it cannot end the frame early.
        let value = serde_json::json!({"delta": "a\nb"});
        let expected = "data: {\"delta\":\"a\\nb\"}\n\n";
        assert_eq!(data(&value), expected);
        assert_eq!(with_id(Some(7), &value), format!("id: 7\n{expected}"));
        assert_eq!(with_id(None, &value), data(&value));
    }
}
