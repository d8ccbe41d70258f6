//! Per-key limits, and a key's limits for one model: requests per minute,
//! tokens per minute and requests in flight, each over a sliding window of
//! the last minute (a log of what was admitted, not a bucket, so no minute
//! ever holds more than the limit). A request is admitted only if both the
//! key's window and its model's (when the key limits that model) have room.
//! Tokens are reserved from an estimate of the prompt before the call and
//! corrected to the upstream's own count after it.
//!
//! Kept in memory: a restart forgets the last minute.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::keys::{Limits, VirtualKey};

const WINDOW: Duration = Duration::from_secs(60);
/// When only the in-flight limit refuses, try again after this.
const PARALLEL_RETRY: Duration = Duration::from_secs(1);

/// Where a key stands, for the `x-ratelimit-*` headers OpenAI clients read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    pub limit_requests: Option<u32>,
    pub remaining_requests: Option<u32>,
    /// Until the oldest request in the window leaves it.
    pub reset_requests: Duration,
    pub limit_tokens: Option<u32>,
    pub remaining_tokens: Option<u64>,
    pub reset_tokens: Duration,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over a limit now; worth trying again after `retry_after`.
    Busy { retry_after: Duration, standing: Standing },
    /// The request alone needs more tokens than the key may use in a minute.
    TooLarge { needed: u64, tpm: u32 },
}

/// Tokens admitted at a moment: the estimate, or once settled, the count.
#[derive(Debug)]
struct Reservation {
    at: Instant,
    tokens: u64,
    ticket: u64,
}

#[derive(Debug, Default)]
struct Window {
    requests: VecDeque<Instant>,
    tokens: VecDeque<Reservation>,
    in_flight: u32,
    next_ticket: u64,
}

impl Window {
    fn forget_before(&mut self, horizon: Instant) {
        while self.requests.front().is_some_and(|t| *t <= horizon) {
            self.requests.pop_front();
        }
        while self.tokens.front().is_some_and(|r| r.at <= horizon) {
            self.tokens.pop_front();
        }
    }

    fn token_sum(&self) -> u64 {
        self.tokens.iter().map(|r| r.tokens).sum()
    }

    fn standing(&self, limits: Limits, now: Instant) -> Standing {
        let until_leaves =
            |t: Option<Instant>| t.map_or(Duration::ZERO, |t| (t + WINDOW).saturating_duration_since(now));
        Standing {
            limit_requests: limits.rpm,
            remaining_requests: limits.rpm.map(|rpm| rpm.saturating_sub(self.requests.len() as u32)),
            reset_requests: until_leaves(self.requests.front().copied()),
            limit_tokens: limits.tpm,
            remaining_tokens: limits.tpm.map(|tpm| u64::from(tpm).saturating_sub(self.token_sum())),
            reset_tokens: until_leaves(self.tokens.front().map(|r| r.at)),
        }
    }

    /// How long until a request estimated at `tokens` fits, zero if it does now.
    fn wait_for_room(&self, limits: Limits, tokens: u64, now: Instant) -> Duration {
        let mut wait = Duration::ZERO;
        if limits.rpm.is_some_and(|rpm| self.requests.len() >= rpm as usize) {
            wait = wait.max(self.standing(limits, now).reset_requests);
        }
        if let Some(tpm) = limits.tpm {
            let over = (self.token_sum() + tokens).saturating_sub(u64::from(tpm));
            if over > 0 {
                // Wait until enough of the oldest reservations leave the window.
                let mut freed = 0;
                for r in &self.tokens {
                    freed += r.tokens;
                    if freed >= over {
                        wait = wait.max((r.at + WINDOW).saturating_duration_since(now));
                        break;
                    }
                }
            }
        }
        if limits.max_parallel.is_some_and(|max| self.in_flight >= max) {
            wait = wait.max(PARALLEL_RETRY);
        }
        wait
    }

    fn take(&mut self, tokens: u64, now: Instant) -> u64 {
        self.next_ticket += 1;
        self.requests.push_back(now);
        self.tokens.push_back(Reservation { at: now, tokens, ticket: self.next_ticket });
        self.in_flight += 1;
        self.next_ticket
    }
}

/// The limiter. Share one `Arc<Limiter>`.
#[derive(Debug, Default)]
pub struct Limiter {
    windows: Mutex<HashMap<String, Window>>,
}

/// An admitted request: holds its place in flight until dropped.
#[derive(Debug)]
pub struct Admission {
    limiter: Arc<Limiter>,
    /// Each window it took a place in, and its ticket there.
    places: Vec<(String, u64)>,
    /// The key's standing (the headers clients read).
    pub standing: Standing,
}

impl Limiter {
    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a request to `model` that is estimated to use
    /// `estimated_tokens`, or says why not and when to try again.
    pub fn admit(
        self: &Arc<Self>,
        key: &VirtualKey,
        model: &str,
        estimated_tokens: u64,
        now: Instant,
    ) -> Result<Admission, Refusal> {
        // The key's window, then the model's if the key limits it.
        let mut scopes = vec![(key.id.clone(), key.limits)];
        if let Some(limits) = key.policy.model_limits.iter().find(|(m, _)| m == model).map(|(_, l)| *l) {
            scopes.push((format!("{}\u{0}{model}", key.id), limits));
        }
        for (_, limits) in &scopes {
            if let Some(tpm) = limits.tpm
                && estimated_tokens > u64::from(tpm)
            {
                return Err(Refusal::TooLarge { needed: estimated_tokens, tpm });
            }
        }
        let mut windows = self.windows();
        for (name, limits) in &scopes {
            let window = windows.entry(name.clone()).or_default();
            window.forget_before(now.checked_sub(WINDOW).unwrap_or(now));
            let wait = window.wait_for_room(*limits, estimated_tokens, now);
            if !wait.is_zero() {
                return Err(Refusal::Busy { retry_after: wait, standing: window.standing(*limits, now) });
            }
        }
        let mut places = Vec::with_capacity(scopes.len());
        for (name, _) in &scopes {
            let window = windows.entry(name.clone()).or_default();
            places.push((name.clone(), window.take(estimated_tokens, now)));
        }
        let standing = windows.get(&key.id).map(|w| w.standing(key.limits, now)).unwrap_or_default();
        Ok(Admission { limiter: self.clone(), places, standing })
    }
}

impl Admission {
    /// Replaces the estimate with what the upstream counted.
    pub fn settle(&self, actual_tokens: u64) {
        let mut windows = self.limiter.windows();
        for (name, ticket) in &self.places {
            if let Some(reservation) =
                windows.get_mut(name).and_then(|w| w.tokens.iter_mut().find(|r| r.ticket == *ticket))
            {
                reservation.tokens = actual_tokens;
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut windows = self.limiter.windows();
        for (name, _) in &self.places {
            if let Some(w) = windows.get_mut(name) {
                w.in_flight = w.in_flight.saturating_sub(1);
            }
        }
    }
}

/// A prompt's tokens, estimated before the call: about four characters a
/// token, as OpenAI's tokenizers average on English text.
pub fn estimate_tokens(body: &serde_json::Value) -> u64 {
    let text = |field: &str| body.get(field).and_then(serde_json::Value::as_str).map_or(0, str::len);
    let chars: usize = body
        .get("messages")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(serde_json::Value::as_str))
        .map(str::len)
        .sum::<usize>()
        + text("prompt")
        + text("system");
    (chars as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::keys::{Enforcement, Limits};
    use tether_base::clock::Timestamp;

    fn key(limits: Limits) -> VirtualKey {
        VirtualKey {
            id: "k".into(),
            owner: "o".into(),
            models: vec![],
            limits,
            policy: Default::default(),
            enforcement: Enforcement::Unrestricted,
            created_at: Timestamp::from_millis(0),
            expires_at: Timestamp::from_millis(u64::MAX),
            created_by: "a".into(),
        }
    }

    #[test]
    fn no_minute_holds_more_requests_than_the_limit() {
        let limiter = Arc::new(Limiter::default());
        let k = key(Limits { rpm: Some(3), ..Limits::default() });
        let t0 = Instant::now();
        let mut held = Vec::new();
        for i in 0..3 {
            held.push(limiter.admit(&k, "m", 1, t0 + Duration::from_secs(i)).unwrap());
        }
        let Err(Refusal::Busy { retry_after, standing }) = limiter.admit(&k, "m", 1, t0 + Duration::from_secs(10))
        else {
            panic!("a fourth request in the minute")
        };
        assert_eq!(retry_after, Duration::from_secs(50), "until the first leaves the window");
        assert_eq!((standing.limit_requests, standing.remaining_requests), (Some(3), Some(0)));
        assert!(limiter.admit(&k, "m", 1, t0 + Duration::from_secs(60)).is_ok(), "the first has left");
    }

    #[test]
    fn tokens_are_reserved_from_the_estimate_and_settled_to_the_count() {
        let limiter = Arc::new(Limiter::default());
        let k = key(Limits { tpm: Some(100), ..Limits::default() });
        let t0 = Instant::now();
        let first = limiter.admit(&k, "m", 10, t0).unwrap();
        first.settle(90);
        let refused = limiter.admit(&k, "m", 20, t0 + Duration::from_secs(1));
        assert!(matches!(refused, Err(Refusal::Busy { retry_after, .. }) if retry_after == Duration::from_secs(59)));
        assert!(limiter.admit(&k, "m", 10, t0 + Duration::from_secs(1)).is_ok(), "exactly the limit fits");
        assert_eq!(limiter.admit(&k, "m", 101, t0).unwrap_err(), Refusal::TooLarge { needed: 101, tpm: 100 });
    }

    #[test]
    fn requests_in_flight_are_counted_until_they_end() {
        let limiter = Arc::new(Limiter::default());
        let k = key(Limits { max_parallel: Some(1), ..Limits::default() });
        let now = Instant::now();
        let first = limiter.admit(&k, "m", 1, now).unwrap();
        assert!(matches!(limiter.admit(&k, "m", 1, now), Err(Refusal::Busy { .. })));
        drop(first);
        assert!(limiter.admit(&k, "m", 1, now).is_ok());
    }

    #[test]
    fn a_models_own_limit_holds_beside_the_keys() {
        let limiter = Arc::new(Limiter::default());
        let mut k = key(Limits { rpm: Some(10), ..Limits::default() });
        k.policy.model_limits = vec![("big".into(), Limits { rpm: Some(2), ..Limits::default() })];
        let now = Instant::now();
        for _ in 0..2 {
            limiter.admit(&k, "big", 1, now).unwrap();
        }
        let Err(Refusal::Busy { standing, .. }) = limiter.admit(&k, "big", 1, now) else { panic!("a third to big") };
        assert_eq!(standing.limit_requests, Some(2), "the model's limit is the one that refused");
        let other = limiter.admit(&k, "small", 1, now).unwrap();
        assert_eq!(other.standing.remaining_requests, Some(7), "the key's own window counts every model");
        for _ in 0..7 {
            limiter.admit(&k, "small", 1, now).unwrap();
        }
        assert!(limiter.admit(&k, "small", 1, now).is_err(), "the key's limit still holds");
    }
}
