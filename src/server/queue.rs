//! The generation queue: who gets the model's next free sequence.
//!
//! `--parallel` sequences generate at once. A chat request that reaches generation waits
//! here for one; when a sequence frees up it goes to the waiter whose caller (a key, or a
//! public key's visitor address) has the fewest generations running, the longest waiting
//! first among equals, so one busy integration cannot starve the others. A waiter gives up
//! after `max_wait` (503 `overloaded` with `Retry-After`) or as soon as its client leaves.
//! The admission limit (`--max-queue`) bounds how many requests wait at all.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::llm::{ChatMessage, GenParams, GenStats, Generator};

/// Why a request got no sequence.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("waited {0:?} for the model without getting a turn; retry shortly")]
    TimedOut(Duration),
    #[error("the client went away while waiting for the model")]
    Cancelled,
}

pub struct GenerationQueue {
    state: Mutex<State>,
    changed: Condvar,
    max_wait: Duration,
}

#[derive(Default)]
struct State {
    free: usize,
    /// Generations running, per caller.
    running: HashMap<String, usize>,
    /// Waiting callers in arrival order: (ticket, caller).
    waiting: Vec<(u64, String)>,
    /// Tickets handed a sequence that their waiter has not picked up yet.
    granted: Vec<u64>,
    next_ticket: u64,
}

/// A sequence held by one generation; dropping it frees the sequence for the next waiter.
pub struct Held<'q> {
    queue: &'q GenerationQueue,
    caller: String,
}

impl GenerationQueue {
    pub fn new(parallel: usize, max_wait: Duration) -> GenerationQueue {
        GenerationQueue {
            state: Mutex::new(State {
                free: parallel.max(1),
                ..State::default()
            }),
            changed: Condvar::new(),
            max_wait,
        }
    }

    /// Requests waiting for a sequence.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Generations running.
    pub fn running(&self) -> usize {
        self.lock().running.values().sum()
    }

    /// Blocks until `caller` gets a sequence, `max_wait` passes, or `cancelled` says the
    /// client is gone (checked a few times a second).
    pub fn acquire(
        &self,
        caller: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Held<'_>, QueueError> {
        let started = Instant::now();
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push((ticket, caller.to_string()));
        self.dispatch(&mut state);
        loop {
            if let Some(i) = state.granted.iter().position(|&t| t == ticket) {
                state.granted.swap_remove(i);
                return Ok(Held {
                    queue: self,
                    caller: caller.to_string(),
                });
            }
            let waited = started.elapsed();
            let error = if waited >= self.max_wait {
                Some(QueueError::TimedOut(self.max_wait))
            } else if cancelled() {
                Some(QueueError::Cancelled)
            } else {
                None
            };
            if let Some(error) = error {
                state.waiting.retain(|(t, _)| *t != ticket);
                return Err(error);
            }
            let nap = (self.max_wait - waited).min(Duration::from_millis(200));
            state = self.changed.wait_timeout(state, nap).expect("queue lock").0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("queue lock")
    }

    /// Hands free sequences to waiters: the caller with the fewest running first, then the
    /// earliest ticket.
    fn dispatch(&self, state: &mut State) {
        let mut handed = false;
        while state.free > 0 && !state.waiting.is_empty() {
            let pick = state
                .waiting
                .iter()
                .enumerate()
                .min_by_key(|(_, (ticket, caller))| {
                    (state.running.get(caller).copied().unwrap_or(0), *ticket)
                })
                .map(|(i, _)| i)
                .expect("waiting is not empty");
            let (ticket, caller) = state.waiting.remove(pick);
            *state.running.entry(caller).or_default() += 1;
            state.free -= 1;
            state.granted.push(ticket);
            handed = true;
        }
        if handed {
            self.changed.notify_all();
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        if let Some(n) = state.running.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                state.running.remove(&self.caller);
            }
        }
        state.free += 1;
        self.queue.dispatch(&mut state);
    }
}

/// A generator whose every generation first takes a turn in the queue.
pub struct Queued<'a> {
    pub inner: &'a dyn Generator,
    pub queue: &'a GenerationQueue,
    pub caller: &'a str,
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
}

impl Generator for Queued<'_> {
    fn generate(
        &self,
        messages: &[ChatMessage],
        params: &GenParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<GenStats> {
        let _turn = self.queue.acquire(self.caller, self.cancelled)?;
        self.inner.generate(messages, params, on_token)
    }

    fn classify(&self, messages: &[ChatMessage], labels: &[&str]) -> anyhow::Result<Vec<f32>> {
        let _turn = self.queue.acquire(self.caller, self.cancelled)?;
        self.inner.classify(messages, labels)
    }

    fn count_tokens(&self, text: &str) -> anyhow::Result<usize> {
        self.inner.count_tokens(text)
    }

    fn context_size(&self) -> usize {
        self.inner.context_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Waits (at most 10 s) until `done` holds.
    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "never {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_free_sequence_goes_to_the_caller_with_the_fewest_running() {
        let queue = Arc::new(GenerationQueue::new(2, Duration::from_secs(30)));
        let never = || false;
        // Caller "busy" holds both sequences and queues two more; "quiet" arrives last.
        let first = queue.acquire("busy", &never).unwrap();
        let second = queue.acquire("busy", &never).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (mut waiters, mut releases) = (Vec::new(), Vec::new());
        for (i, caller) in ["busy", "busy", "quiet"].into_iter().enumerate() {
            let (shared, order) = (queue.clone(), order.clone());
            // Each waiter holds its turn until the test lets go of its sender.
            let (release, released) = std::sync::mpsc::channel::<()>();
            releases.push(release);
            waiters.push(std::thread::spawn(move || {
                let turn = shared.acquire(caller, &|| false).unwrap();
                order.lock().unwrap().push(caller);
                let _ = released.recv();
                drop(turn);
            }));
            until("waiting", || queue.waiting() == i + 1);
        }
        // One sequence frees up: "quiet" (nothing running) goes before the older "busy"s.
        drop(first);
        until("served", || !order.lock().unwrap().is_empty());
        assert_eq!(*order.lock().unwrap(), vec!["quiet"]);
        drop(releases);
        drop(second);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec!["quiet", "busy", "busy"]);
        assert_eq!(queue.running(), 0);
    }

    #[test]
    fn waiters_give_up_after_the_max_wait_or_when_cancelled() {
        let queue = GenerationQueue::new(1, Duration::from_millis(300));
        let held = queue.acquire("a", &|| false).unwrap();
        let started = Instant::now();
        assert!(matches!(
            queue.acquire("b", &|| false),
            Err(QueueError::TimedOut(_))
        ));
        assert!(started.elapsed() >= Duration::from_millis(300));
        let gone = AtomicBool::new(true);
        assert!(matches!(
            queue.acquire("b", &|| gone.load(Ordering::Relaxed)),
            Err(QueueError::Cancelled)
        ));
        assert_eq!(queue.waiting(), 0);
        drop(held);
        // The sequence is free again and nobody is left waiting for it.
        assert!(queue.acquire("b", &|| false).is_ok());
    }
}
