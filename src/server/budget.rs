//! Public callers' hourly budgets (per visitor, per client address, per address within a
//! bot, per bot), charged all or nothing: a request takes one unit from each of its
//! budgets only when every one of them has a unit left, so a refused request costs none.
//!
//! Each budget is a token bucket holding `per_hour` units, refilled evenly over the hour
//! (as `governor`'s GCRA with that burst would be; governor cannot check several buckets
//! before taking from any, hence this).
//!
//! Nodes sharing a store each hold their share: a message costs as many units as there
//! are nodes serving (`ratelimit::Share`), at most the whole budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::http::StatusCode;

use super::error::ApiError;
use super::ratelimit::Share;

/// One kind of budget: `per_hour` units for each key.
#[derive(Debug, Clone)]
pub struct Budget {
    pub per_hour: u32,
    /// Whose budget it is, for the refusal: `{}` becomes `per_hour`.
    pub what: &'static str,
}

impl Budget {
    /// `None` when `per_hour` is 0 (no budget).
    pub fn per_hour(per_hour: u32, what: &'static str) -> Option<Budget> {
        (per_hour > 0).then_some(Budget { per_hour, what })
    }

    fn rate(&self) -> f64 {
        f64::from(self.per_hour) / 3600.0
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: f64,
    at: Instant,
    /// Its budget's `per_hour`: what it refills to.
    full: f64,
}

impl Bucket {
    fn units_at(&self, now: Instant) -> f64 {
        (self.units + now.duration_since(self.at).as_secs_f64() * self.full / 3600.0).min(self.full)
    }
}

/// What one request was charged: given back if it is then refused for want of capacity.
#[derive(Debug, Clone, Default)]
pub struct Charge(Vec<(Budget, String, f64)>);

/// Every budget's buckets, behind one lock so a charge sees and takes them together.
#[derive(Default)]
pub struct Budgets {
    buckets: Mutex<HashMap<(&'static str, String), Bucket>>,
    charges: AtomicU64,
    share: Share,
}

impl Budgets {
    /// Budgets that nodes sharing a store split between them.
    pub fn shared(share: &Share) -> Budgets {
        Budgets {
            share: share.clone(),
            ..Budgets::default()
        }
    }

    /// Takes one unit from each `(budget, key)`, or none: 429 `budget_exhausted` naming
    /// the budget that takes longest to have a unit again, with the seconds until then.
    pub fn charge(&self, wanted: &[(&Budget, String)]) -> Result<Charge, ApiError> {
        self.charge_at(wanted, Instant::now())
    }

    /// Gives back what `charge` took (a request that was admitted, then refused).
    pub fn refund(&self, charge: &Charge) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("budget lock");
        for (budget, key, cost) in &charge.0 {
            if let Some(bucket) = buckets.get_mut(&(budget.what, key.clone())) {
                bucket.units = (bucket.units_at(now) + cost).min(bucket.full);
                bucket.at = now;
            }
        }
    }

    fn charge_at(&self, wanted: &[(&Budget, String)], now: Instant) -> Result<Charge, ApiError> {
        let mut buckets = self.buckets.lock().expect("budget lock");
        // Forget full buckets now and then, so one-off clients do not pile up.
        if self.charges.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            buckets.retain(|_, bucket| bucket.units_at(now) < bucket.full);
        }
        let refilled: Vec<f64> = wanted
            .iter()
            .map(|(budget, key)| {
                buckets
                    .get(&(budget.what, key.clone()))
                    .map_or(f64::from(budget.per_hour), |b| b.units_at(now))
            })
            .collect();
        let nodes = f64::from(self.share.nodes());
        let costs: Vec<f64> = wanted
            .iter()
            .map(|(budget, _)| nodes.min(f64::from(budget.per_hour)))
            .collect();
        let empty = wanted
            .iter()
            .zip(refilled.iter().zip(&costs))
            .filter(|(_, (units, cost))| **units < **cost)
            .map(|((budget, _), (units, cost))| {
                (budget, ((cost - units) / budget.rate()).ceil().max(1.0))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((budget, wait)) = empty {
            let retry_after = wait as u64;
            let mut what = budget.what.replace("{}", &budget.per_hour.to_string());
            if nodes > 1.0 {
                what.push_str(&format!(" (shared by the {nodes} nodes serving)"));
            }
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "budget_exhausted",
                format!("{what} reached; retry in {retry_after}s"),
            );
            error.retry_after = Some(retry_after);
            return Err(error);
        }
        for (((budget, key), units), cost) in wanted.iter().zip(refilled).zip(&costs) {
            buckets.insert(
                (budget.what, key.clone()),
                Bucket {
                    units: units - cost,
                    at: now,
                    full: f64::from(budget.per_hour),
                },
            );
        }
        Ok(Charge(
            wanted
                .iter()
                .zip(costs)
                .map(|((budget, key), cost)| ((*budget).clone(), key.clone(), cost))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_takes_nothing_from_the_other_budgets_and_units_come_back_over_the_hour() {
        let visitor = Budget::per_hour(5, "this visitor's budget of {} messages an hour").unwrap();
        let bot = Budget::per_hour(2, "this bot's budget of {} messages an hour").unwrap();
        let budgets = Budgets::default();
        let start = Instant::now();
        let both = |v: &str| vec![(&visitor, v.to_string()), (&bot, "docs".to_string())];
        assert!(budgets.charge_at(&both("a"), start).is_ok());
        assert!(budgets.charge_at(&both("a"), start).is_ok());
        // The bot's budget is spent: refused, and the visitor's three units stay.
        for _ in 0..10 {
            let refused = budgets.charge_at(&both("a"), start).unwrap_err();
            assert_eq!(refused.status, 429);
            assert_eq!(refused.code, "budget_exhausted");
            assert!(
                refused.message.contains("bot's budget of 2"),
                "{}",
                refused.message
            );
            // One unit comes back in 3600 / 2 seconds.
            assert_eq!(refused.retry_after, Some(1800));
        }
        let alone = [(&visitor, "a".to_string())];
        for _ in 0..3 {
            assert!(budgets.charge_at(&alone, start).is_ok());
        }
        assert!(budgets.charge_at(&alone, start).is_err());
        // Half an hour later the bot has one unit again; given back, it has it again.
        let later = start + std::time::Duration::from_secs(1800);
        let charge = budgets.charge_at(&both("b"), later).unwrap();
        assert!(budgets.charge_at(&both("b"), later).is_err());
        budgets.refund(&charge);
        assert!(budgets.charge(&both("b")).is_ok());
        // The refusal names the budget that takes longest to come back.
        let slow = Budget::per_hour(1, "this address's budget of {} an hour").unwrap();
        let pair = vec![(&bot, "x".to_string()), (&slow, "x".to_string())];
        budgets.charge_at(&pair, start).unwrap();
        let refused = budgets.charge_at(&pair, start).unwrap_err();
        assert!(
            refused.message.contains("address's budget of 1"),
            "{}",
            refused.message
        );
        assert_eq!(refused.retry_after, Some(3600));
        assert!(Budget::per_hour(0, "none").is_none());
    }

    #[test]
    fn nodes_sharing_a_store_each_hold_their_share_of_a_budget() {
        let visitor = Budget::per_hour(6, "this visitor's budget of {} messages an hour").unwrap();
        let share = Share::default();
        let budgets = Budgets::shared(&share);
        share.set_nodes(3);
        let start = Instant::now();
        let wanted = [(&visitor, "v".to_string())];
        let charges: Vec<Charge> = (0..2)
            .map(|_| budgets.charge_at(&wanted, start).unwrap())
            .collect();
        let refused = budgets.charge_at(&wanted, start).unwrap_err();
        assert!(
            refused.message.contains("shared by the 3 nodes serving"),
            "{}",
            refused.message
        );
        // Three units come back in 3600 / 6 * 3 seconds.
        assert_eq!(refused.retry_after, Some(1800));
        // A refund gives back what the charge cost.
        budgets.refund(&charges[1]);
        assert!(budgets.charge_at(&wanted, Instant::now()).is_ok());
        // Alone again, a unit a message.
        share.set_nodes(1);
        let alone = [(&visitor, "w".to_string())];
        for _ in 0..6 {
            assert!(budgets.charge_at(&alone, start).is_ok());
        }
        assert!(budgets.charge_at(&alone, start).is_err());
    }
}
