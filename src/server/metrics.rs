//! `/metrics` in the Prometheus text format: request counts and latency by route, auth
//! failures, chat answers, time to first token, decode speed and the generation queue, so
//! operators can alert on error, 401 and latency spikes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds, in seconds, of the latency histograms' buckets.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const ANSWER_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
];

/// A cumulative histogram (bucket counts, sum and count).
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// What one answered chat turn tells the metrics.
pub struct AnswerSample {
    pub answered: bool,
    pub cached: bool,
    pub completion_tokens: usize,
    /// Seconds from the question to the first answer token.
    pub ttft_s: f64,
    pub total_s: f64,
}

/// The gauges read when `/metrics` is scraped.
pub struct Gauges {
    /// Webhook deliveries recorded by outcome (delivered, retried, failed), and pending.
    pub webhooks: [u64; 3],
    pub webhooks_pending: u64,
    /// Chat requests admitted (generating or waiting).
    pub in_flight: usize,
    /// Requests waiting for a free sequence.
    pub waiting: usize,
    /// Generations running.
    pub running: usize,
    /// Requests to remote generation engines (None: generation is in-process).
    pub engine: Option<crate::llm::EngineStats>,
}

pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    auth_failures: Mutex<BTreeMap<u16, u64>>,
    answers: Mutex<Answers>,
    chats: AtomicU64,
    completion_tokens: AtomicU64,
}

struct Answers {
    unanswered: u64,
    cached: u64,
    ttft: Histogram,
    total: Histogram,
    /// Completion tokens over the seconds after the first token, latest generated answer.
    tokens_per_s: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            latency: Mutex::default(),
            auth_failures: Mutex::default(),
            answers: Mutex::new(Answers {
                unanswered: 0,
                cached: 0,
                ttft: Histogram::new(ANSWER_BUCKETS),
                total: Histogram::new(ANSWER_BUCKETS),
                tokens_per_s: 0.0,
            }),
            chats: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((route.to_string(), status))
            .or_default() += 1;
        self.latency
            .lock()
            .expect("metrics lock")
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(REQUEST_BUCKETS))
            .observe(seconds);
    }

    pub fn auth_failure(&self, status: u16) {
        *self
            .auth_failures
            .lock()
            .expect("metrics lock")
            .entry(status)
            .or_default() += 1;
    }

    pub fn answer(&self, sample: AnswerSample) {
        self.chats.fetch_add(1, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(sample.completion_tokens as u64, Ordering::Relaxed);
        let mut answers = self.answers.lock().expect("metrics lock");
        if !sample.answered {
            answers.unanswered += 1;
        }
        if sample.cached {
            answers.cached += 1;
            return;
        }
        answers.ttft.observe(sample.ttft_s);
        answers.total.observe(sample.total_s);
        let decode_s = sample.total_s - sample.ttft_s;
        if sample.completion_tokens > 1 && decode_s > 0.0 {
            answers.tokens_per_s = (sample.completion_tokens - 1) as f64 / decode_s;
        }
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP docent_requests_total HTTP requests by route and status.\n\
             # TYPE docent_requests_total counter\n",
        );
        for ((route, status), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "docent_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP docent_request_duration_seconds HTTP request latency by route, to the response head (a stream's events follow it).\n\
             # TYPE docent_request_duration_seconds histogram\n",
        );
        for (route, histogram) in self.latency.lock().expect("metrics lock").iter() {
            histogram.render(
                &mut out,
                "docent_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        out.push_str(
            "# HELP docent_auth_failures_total Requests refused by authentication.\n\
             # TYPE docent_auth_failures_total counter\n",
        );
        for (status, n) in self.auth_failures.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "docent_auth_failures_total{{status=\"{status}\"}} {n}");
        }
        let answers = self.answers.lock().expect("metrics lock");
        let _ = write!(
            out,
            "# HELP docent_chat_requests_total Chat turns answered (or declined).\n\
             # TYPE docent_chat_requests_total counter\ndocent_chat_requests_total {}\n\
             # HELP docent_chat_unanswered_total Chat turns the bot declined.\n\
             # TYPE docent_chat_unanswered_total counter\ndocent_chat_unanswered_total {}\n\
             # HELP docent_chat_cached_total Chat turns served from the answer cache.\n\
             # TYPE docent_chat_cached_total counter\ndocent_chat_cached_total {}\n\
             # HELP docent_completion_tokens_total Tokens generated.\n\
             # TYPE docent_completion_tokens_total counter\ndocent_completion_tokens_total {}\n",
            self.chats.load(Ordering::Relaxed),
            answers.unanswered,
            answers.cached,
            self.completion_tokens.load(Ordering::Relaxed),
        );
        out.push_str(
            "# HELP docent_chat_ttft_seconds Time from a question to its first answer token (generated answers).\n\
             # TYPE docent_chat_ttft_seconds histogram\n",
        );
        answers
            .ttft
            .render(&mut out, "docent_chat_ttft_seconds", "");
        out.push_str(
            "# HELP docent_chat_answer_seconds Time from a question to the end of its answer (generated answers).\n\
             # TYPE docent_chat_answer_seconds histogram\n",
        );
        answers
            .total
            .render(&mut out, "docent_chat_answer_seconds", "");
        let _ = write!(
            out,
            "# HELP docent_generation_tokens_per_second Decode speed of the latest generated answer.\n\
             # TYPE docent_generation_tokens_per_second gauge\ndocent_generation_tokens_per_second {:.2}\n\
             # HELP docent_chat_in_flight Chat requests admitted, generating or waiting.\n\
             # TYPE docent_chat_in_flight gauge\ndocent_chat_in_flight {}\n\
             # HELP docent_generation_queue_depth Chat requests waiting for a free sequence.\n\
             # TYPE docent_generation_queue_depth gauge\ndocent_generation_queue_depth {}\n\
             # HELP docent_generation_running Answers being generated.\n\
             # TYPE docent_generation_running gauge\ndocent_generation_running {}\n",
            answers.tokens_per_s, gauges.in_flight, gauges.waiting, gauges.running,
        );
        out.push_str(
            "# HELP docent_webhook_attempts_total Webhook delivery attempts by outcome.\n\
             # TYPE docent_webhook_attempts_total counter\n",
        );
        for (outcome, n) in ["delivered", "retried", "failed"]
            .iter()
            .zip(gauges.webhooks)
        {
            let _ = writeln!(
                out,
                "docent_webhook_attempts_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = write!(
            out,
            "# HELP docent_webhook_pending Webhook deliveries waiting to be sent or retried.\n\
             # TYPE docent_webhook_pending gauge\ndocent_webhook_pending {}\n",
            gauges.webhooks_pending,
        );
        if let Some(engine) = &gauges.engine {
            render_engine(&mut out, engine);
        }
        out
    }
}

/// The remote generation engines' counters: requests, errors by kind, upstream latency
/// and time to first token.
fn render_engine(out: &mut String, engine: &crate::llm::EngineStats) {
    let _ = write!(
        out,
        "# HELP docent_llm_requests_total Requests sent to remote generation engines.\n\
         # TYPE docent_llm_requests_total counter\ndocent_llm_requests_total {}\n\
         # HELP docent_llm_errors_total Remote engine requests that failed, by kind.\n\
         # TYPE docent_llm_errors_total counter\n",
        engine.requests,
    );
    for (kind, n) in &engine.errors {
        let _ = writeln!(out, "docent_llm_errors_total{{kind=\"{kind}\"}} {n}");
    }
    let _ = write!(
        out,
        "# HELP docent_llm_upstream_seconds Time from a request to the engine to the end of its answer.\n\
         # TYPE docent_llm_upstream_seconds summary\n\
         docent_llm_upstream_seconds_sum {:.6}\ndocent_llm_upstream_seconds_count {}\n\
         # HELP docent_llm_ttft_seconds Time from a generation request to the engine's first piece.\n\
         # TYPE docent_llm_ttft_seconds summary\n\
         docent_llm_ttft_seconds_sum {:.6}\ndocent_llm_ttft_seconds_count {}\n",
        engine.upstream_seconds, engine.upstream_count, engine.ttft_seconds, engine.ttft_count,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.0625, 0.5, 0.75, 3.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "route=\"/a\"");
        assert_eq!(
            out,
            "x_bucket{route=\"/a\",le=\"0.1\"} 1\nx_bucket{route=\"/a\",le=\"1\"} 3\n\
             x_bucket{route=\"/a\",le=\"+Inf\"} 4\nx_sum{route=\"/a\"} 4.3125\nx_count{route=\"/a\"} 4\n"
        );
    }

    #[test]
    fn answers_feed_the_ttft_histogram_and_the_decode_speed() {
        let metrics = Metrics::default();
        metrics.answer(AnswerSample {
            answered: true,
            cached: false,
            completion_tokens: 21,
            ttft_s: 2.0,
            total_s: 4.0,
        });
        metrics.answer(AnswerSample {
            answered: false,
            cached: true,
            completion_tokens: 0,
            ttft_s: 0.0,
            total_s: 0.0,
        });
        let text = metrics.render(&Gauges {
            webhooks: [5, 2, 1],
            webhooks_pending: 4,
            in_flight: 3,
            waiting: 1,
            running: 2,
            engine: Some(crate::llm::EngineStats {
                requests: 9,
                errors: vec![("unavailable", 2), ("timeout", 1)],
                upstream_seconds: 1.5,
                upstream_count: 6,
                ttft_seconds: 0.25,
                ttft_count: 5,
            }),
        });
        for line in [
            "docent_webhook_attempts_total{outcome=\"delivered\"} 5",
            "docent_webhook_attempts_total{outcome=\"failed\"} 1",
            "docent_webhook_pending 4",
            "docent_llm_requests_total 9",
            "docent_llm_errors_total{kind=\"unavailable\"} 2",
            "docent_llm_upstream_seconds_count 6",
            "docent_llm_ttft_seconds_sum 0.250000",
            "docent_chat_requests_total 2",
            "docent_chat_unanswered_total 1",
            "docent_chat_cached_total 1",
            "docent_completion_tokens_total 21",
            "docent_chat_ttft_seconds_bucket{le=\"2\"} 1",
            "docent_chat_ttft_seconds_bucket{le=\"1\"} 0",
            "docent_chat_ttft_seconds_count 1",
            "docent_generation_tokens_per_second 10.00",
            "docent_generation_queue_depth 1",
            "docent_generation_running 2",
            "docent_chat_in_flight 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
