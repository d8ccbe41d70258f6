//! Slowing down guessing: failed logins and second-factor codes, counted
//! per account and per source address, answered with a growing delay and
//! then a lockout; and a plain rate limit for unauthenticated requests.
//!
//! The schedule (also in the README):
//!
//! | subject | free failures | then wait before the next try | locked |
//! |---|---|---|---|
//! | account | 3 | 1 s, 2 s, 4 s, 8 s, 16 s, then 30 s | 15 min at 10 failures |
//! | source address | 6 | 1 s, 2 s, 4 s, 8 s, 16 s, then 30 s | 15 min at 20 failures |
//!
//! Failures count for 15 minutes; a successful login clears its account's
//! count (not its address's). A try inside a wait or a lockout is refused
//! without checking the password and is not counted. More than 5 failures
//! in 5 minutes raises one alert per burst (an account and an address
//! failing together raise one), again only after 5 quiet minutes. Guessing
//! spread thin, over many accounts and addresses each under its own
//! threshold, is caught appliance-wide: more than [`SITE_ALERT_AFTER`]
//! failures in 5 minutes raise one `failed_logins` alert for
//! [`APPLIANCE_WIDE`], with how many accounts and addresses took part.
//!
//! Accounts are counted under their pseudonym (`Accounts::pseudonym`), never
//! the name typed, which may be a mistyped password. The counts and
//! lockouts of accounts and addresses are kept in the store as well
//! ([`save`], in the transaction that records the failure or the success),
//! and reloaded at start ([`LoginThrottle::restore`]): a restart forgives no
//! one. Both copies are bounded by [`MAX_SUBJECTS`]; what ages out of the
//! window is pruned from both.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, ReadTx, WriteTx};

/// The failure state of accounts and addresses, keyed by [`Subject::key`].
const LOGIN_FAILURES: Collection<Failures> = Collection::new("login_failures");

const WINDOW: Duration = Duration::from_secs(15 * 60);
const LOCKOUT: Duration = Duration::from_secs(15 * 60);
const MAX_DELAY: Duration = Duration::from_secs(30);
const ALERT_WINDOW: Duration = Duration::from_secs(5 * 60);
/// An alert is raised when failures within [`ALERT_WINDOW`] exceed this.
pub const ALERT_AFTER: usize = 5;
/// The appliance-wide alert is raised when all failures within
/// [`ALERT_WINDOW`] exceed this.
pub const SITE_ALERT_AFTER: usize = 50;
/// The subject of the appliance-wide alert.
pub const APPLIANCE_WIDE: &str = "appliance";
/// Subjects tracked at most; the quietest are forgotten first.
const MAX_SUBJECTS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Rule {
    free: usize,
    lock_at: usize,
}

const ACCOUNT: Rule = Rule { free: 3, lock_at: 10 };
const ADDRESS: Rule = Rule { free: 6, lock_at: 20 };

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    /// An account, by its pseudonym.
    Account(String),
    Address(IpAddr),
    /// Every failure, whatever its account and address (not stored: it
    /// only paces the appliance-wide alert).
    Appliance,
}

impl Subject {
    /// Its key in the store; none for what is not stored.
    fn key(&self) -> Option<String> {
        match self {
            Subject::Account(pseudonym) => Some(format!("account:{pseudonym}")),
            Subject::Address(ip) => Some(format!("address:{ip}")),
            Subject::Appliance => None,
        }
    }

    fn from_key(key: &str) -> Option<Subject> {
        match key.split_once(':')? {
            ("account", pseudonym) => Some(Subject::Account(pseudonym.to_owned())),
            ("address", ip) => ip.parse().ok().map(Subject::Address),
            _ => None,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Failures {
    times: VecDeque<Timestamp>,
    locked_until: Option<Timestamp>,
    /// An alert was raised for the current burst.
    alerted: bool,
}

impl Failures {
    fn forget_old(&mut self, now: Timestamp) {
        while self.times.front().is_some_and(|t| now.since(*t) >= WINDOW) {
            self.times.pop_front();
        }
        if self.times.back().is_none_or(|t| now.since(*t) >= ALERT_WINDOW) {
            self.alerted = false;
        }
    }

    /// When the next try may be made under `rule`.
    fn next_try(&self, rule: Rule) -> Option<Timestamp> {
        if let Some(until) = self.locked_until {
            return Some(until);
        }
        let n = self.times.len();
        if n < rule.free {
            return None;
        }
        let doublings = u32::try_from(n - rule.free).unwrap_or(u32::MAX).min(5);
        let delay = Duration::from_secs(1u64 << doublings).min(MAX_DELAY);
        self.times.back().map(|last| last.plus(delay))
    }

    fn recent(&self, now: Timestamp) -> usize {
        self.times.iter().filter(|t| now.since(**t) < ALERT_WINDOW).count()
    }

    /// Nothing left that could slow or lock anyone.
    fn is_spent(&self, now: Timestamp) -> bool {
        self.locked_until.is_none_or(|t| t <= now) && self.times.back().is_none_or(|t| now.since(*t) >= WINDOW)
    }
}

/// What the store must be told: each subject's state, or `None` to delete it.
#[derive(Debug, Default)]
pub struct Changes(Vec<(String, Option<Failures>)>);

/// Writes `changes` (taken with [`LoginThrottle::take_changes`] inside the
/// same transaction, so they land in the order they were made).
pub fn save(tx: &mut WriteTx<'_>, changes: Changes) -> Result<(), store::Error> {
    for (key, state) in changes.0 {
        match state {
            Some(state) => tx.put(LOGIN_FAILURES, key.as_bytes(), &state)?,
            None => {
                tx.delete(LOGIN_FAILURES, key.as_bytes())?;
            }
        }
    }
    Ok(())
}

/// What a previous run stored, for [`LoginThrottle::restore`].
#[derive(Debug, Default)]
pub struct Stored(Vec<(String, Failures)>);

/// Everything a previous run stored.
pub fn load(tx: &ReadTx) -> Result<Stored, store::Error> {
    let mut out = Vec::new();
    tx.scan(LOGIN_FAILURES, None, store::Order::Ascending, |key, state| {
        out.push((String::from_utf8_lossy(key).into_owned(), state));
        Ok(true)
    })?;
    Ok(Stored(out))
}

/// Why a try was refused before any check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too soon after the last failure.
    Wait(Duration),
    /// Locked out.
    Locked(Duration),
}

impl Refusal {
    pub fn retry_after(self) -> Duration {
        match self {
            Refusal::Wait(d) | Refusal::Locked(d) => d,
        }
    }
}

/// What a recorded failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AfterFailure {
    /// Raise the failed-logins alert now (once per burst).
    pub alert: bool,
    /// The account or address was just locked.
    pub locked: bool,
    /// Failures within the alert window for the account and the address.
    pub recent: usize,
    /// Raise the appliance-wide alert now (once per burst).
    pub site_alert: Option<SiteWide>,
}

/// The appliance-wide burst of failures that raised its alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteWide {
    /// Failures within the alert window, from everyone.
    pub failures: usize,
    /// Accounts and addresses with a failure within the window.
    pub accounts: usize,
    pub addresses: usize,
}

/// The failure counts. Share one.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    subjects: HashMap<Subject, Failures>,
    /// Changed or forgotten since the store was last told.
    unsaved: HashSet<Subject>,
}

impl LoginThrottle {
    /// Takes back what a previous run stored (see [`load`]); answers the
    /// entries to delete: those aged out (or beyond the bound).
    pub fn restore(&self, stored: Stored, now: Timestamp) -> Changes {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut spent = Vec::new();
        for (key, failures) in stored.0 {
            match Subject::from_key(&key) {
                Some(subject) if !failures.is_spent(now) && state.subjects.len() < MAX_SUBJECTS => {
                    state.subjects.insert(subject, failures);
                }
                _ => spent.push((key, None)),
            }
        }
        Changes(spent)
    }

    /// What changed since the last call, for [`save`].
    pub fn take_changes(&self) -> Changes {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { subjects, unsaved } = &mut *state;
        Changes(unsaved.drain().filter_map(|s| Some((s.key()?, subjects.get(&s).cloned()))).collect())
    }

    /// Whether a try for `account` from `address` may go ahead now.
    pub fn check(&self, account: &str, address: Option<IpAddr>, now: Timestamp) -> Result<(), Refusal> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let subjects = &mut state.subjects;
        let mut worst: Option<Refusal> = None;
        for (subject, rule) in pairs(account, address) {
            let Some(f) = subjects.get_mut(&subject) else { continue };
            f.forget_old(now);
            if f.locked_until.is_some_and(|t| t <= now) {
                f.locked_until = None;
                f.times.clear();
            }
            let Some(at) = f.next_try(rule) else { continue };
            if at <= now {
                continue;
            }
            let wait = at.since(now);
            let refusal = if f.locked_until.is_some() { Refusal::Locked(wait) } else { Refusal::Wait(wait) };
            worst = Some(match worst {
                Some(w) if w.retry_after() >= wait => w,
                _ => refusal,
            });
        }
        worst.map_or(Ok(()), Err)
    }

    /// Counts a failed password or second-factor code.
    pub fn failed(&self, account: &str, address: Option<IpAddr>, now: Timestamp) -> AfterFailure {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { subjects, unsaved } = &mut *state;
        if subjects.len() >= MAX_SUBJECTS {
            unsaved.extend(forget_quietest(subjects));
        }
        unsaved.extend(pairs(account, address).map(|(subject, _)| subject));
        let mut out = AfterFailure::default();
        let mut over = false;
        let mut already_alerted = false;
        for (subject, rule) in pairs(account, address) {
            let f = subjects.entry(subject).or_default();
            f.forget_old(now);
            f.times.push_back(now);
            if f.locked_until.is_none() && f.times.len() >= rule.lock_at {
                f.locked_until = Some(now.plus(LOCKOUT));
                out.locked = true;
            }
            let recent = f.recent(now);
            out.recent = out.recent.max(recent);
            over |= recent > ALERT_AFTER;
            already_alerted |= f.alerted;
        }
        if over && !already_alerted {
            out.alert = true;
        }
        if over {
            for (subject, _) in pairs(account, address) {
                if let Some(f) = subjects.get_mut(&subject) {
                    f.alerted = true;
                }
            }
        }
        let site = subjects.entry(Subject::Appliance).or_default();
        site.forget_old(now);
        site.times.push_back(now);
        let failures = site.recent(now);
        if failures > SITE_ALERT_AFTER && !site.alerted {
            site.alerted = true;
            let (mut accounts, mut addresses) = (0, 0);
            for (subject, f) in subjects.iter() {
                if f.recent(now) > 0 {
                    match subject {
                        Subject::Account(_) => accounts += 1,
                        Subject::Address(_) => addresses += 1,
                        Subject::Appliance => {}
                    }
                }
            }
            out.site_alert = Some(SiteWide { failures, accounts, addresses });
        }
        out
    }

    /// A successful login clears its account's count.
    pub fn succeeded(&self, account: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let subject = Subject::Account(account.into());
        if state.subjects.remove(&subject).is_some() {
            state.unsaved.insert(subject);
        }
    }
}

fn pairs(account: &str, address: Option<IpAddr>) -> impl Iterator<Item = (Subject, Rule)> {
    std::iter::once((Subject::Account(account.into()), ACCOUNT)).chain(address.map(|a| (Subject::Address(a), ADDRESS)))
}

/// Forgets the tenth of subjects whose last failure is oldest; names them.
fn forget_quietest(subjects: &mut HashMap<Subject, Failures>) -> Vec<Subject> {
    let mut by_last: Vec<_> = subjects.iter().map(|(s, f)| (f.times.back().copied(), s.clone())).collect();
    by_last.sort_by_key(|(t, _)| *t);
    let forgotten: Vec<Subject> = by_last.into_iter().take(MAX_SUBJECTS / 10).map(|(_, s)| s).collect();
    for s in &forgotten {
        subjects.remove(s);
    }
    forgotten
}

/// A token bucket per source address for unauthenticated requests.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Timestamp)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter { per_second: f64::from(per_second), burst: f64::from(burst), buckets: Mutex::default() }
    }

    /// Takes one request's worth; the wait until one is free otherwise.
    pub fn take(&self, address: IpAddr, now: Timestamp) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_SUBJECTS {
            buckets.retain(|_, (_, at)| now.since(*at) < Duration::from_secs(60));
        }
        let (tokens, at) = buckets.entry(address).or_insert((self.burst, now));
        *tokens = (*tokens + now.since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);
    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    fn at(secs: u64) -> Timestamp {
        T0.plus(Duration::from_secs(secs))
    }

    #[test]
    fn an_account_gets_three_free_tries_then_doubling_waits_then_a_lockout() {
        let t = LoginThrottle::default();
        let mut now = T0;
        for _ in 0..3 {
            assert_eq!(t.check("alice", None, now), Ok(()));
            t.failed("alice", None, now);
        }
        for expected in [1, 2, 4, 8, 16, 30] {
            assert_eq!(t.check("alice", None, now), Err(Refusal::Wait(Duration::from_secs(expected))));
            now = now.plus(Duration::from_secs(expected));
            assert_eq!(t.check("alice", None, now), Ok(()));
            t.failed("alice", None, now);
        }
        let after = t.failed("alice", None, now);
        assert!(after.locked, "the tenth failure locks");
        assert_eq!(t.check("alice", None, now), Err(Refusal::Locked(LOCKOUT)));
        assert_eq!(t.check("bob", None, now), Ok(()), "other accounts are not affected");
        now = now.plus(LOCKOUT);
        assert_eq!(t.check("alice", None, now), Ok(()), "the lockout ends");
    }

    #[test]
    fn one_address_trying_many_accounts_is_slowed_and_locked() {
        let t = LoginThrottle::default();
        let mut now = T0;
        for i in 0..6 {
            t.failed(&format!("user{i}"), IP, now);
        }
        assert_eq!(t.check("fresh", IP, now), Err(Refusal::Wait(Duration::from_secs(1))));
        for i in 6..20 {
            now = now.plus(MAX_DELAY);
            t.failed(&format!("user{i}"), IP, now);
        }
        assert!(matches!(t.check("fresh", IP, now), Err(Refusal::Locked(_))));
        assert_eq!(t.check("fresh", None, now), Ok(()));
    }

    #[test]
    fn the_alert_fires_once_per_burst_and_again_after_a_quiet_spell() {
        let t = LoginThrottle::default();
        let alerts: Vec<bool> = (0..12).map(|i| t.failed("alice", IP, at(i * 20)).alert).collect();
        assert_eq!(alerts.iter().filter(|a| **a).count(), 1);
        assert!(alerts[ALERT_AFTER], "the sixth failure raises it");
        let later = at(12 * 20).plus(ALERT_WINDOW);
        let again: Vec<bool> =
            (0..6).map(|i| t.failed("alice", IP, later.plus(Duration::from_secs(i))).alert).collect();
        assert_eq!(again.iter().filter(|a| **a).count(), 1);
    }

    #[test]
    fn guessing_spread_over_many_accounts_and_addresses_raises_one_appliance_wide_alert() {
        // 100 failures over 75 accounts from 50 addresses in 17 s: each
        // account and address stays under its own threshold.
        let t = LoginThrottle::default();
        let mut raised = Vec::new();
        for i in 0..100u64 {
            let address = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, (i % 50) as u8)));
            let after = t.failed(&format!("user{}", i % 75), address, T0.plus(Duration::from_millis(i * 170)));
            assert!(!after.alert, "no single account or address is over its threshold");
            raised.extend(after.site_alert);
        }
        assert_eq!(raised.len(), 1, "one alert per burst");
        assert_eq!(raised[0].failures, SITE_ALERT_AFTER + 1);
        assert_eq!((raised[0].accounts, raised[0].addresses), (51, 50));
    }

    #[test]
    fn a_success_clears_the_account_but_not_the_address() {
        let t = LoginThrottle::default();
        for i in 0..6 {
            t.failed("alice", IP, at(i));
        }
        t.succeeded("alice");
        assert_eq!(t.check("alice", None, at(5)), Ok(()));
        assert!(t.check("alice", IP, at(5)).is_err(), "the address still waits a second");
    }

    /// What `save` would have stored, read back as `load` would.
    fn stored(changes: Changes) -> Stored {
        Stored(changes.0.into_iter().filter_map(|(key, state)| Some((key, state?))).collect())
    }

    #[test]
    fn a_lockout_and_the_counts_survive_a_restart_and_what_aged_out_is_deleted() {
        let t = LoginThrottle::default();
        for i in 0..10 {
            t.failed("hmac:alice", IP, at(i * 31));
        }
        t.failed("hmac:bob", None, at(0));
        let now = at(9 * 31);
        assert!(matches!(t.check("hmac:alice", None, now), Err(Refusal::Locked(_))));
        let saved = t.take_changes();
        assert_eq!(saved.0.len(), 3, "alice, bob and the address: {saved:?}");
        assert!(t.take_changes().0.is_empty(), "nothing changed since");

        let restarted = LoginThrottle::default();
        let spent = restarted.restore(stored(saved), now);
        assert!(spent.0.is_empty());
        assert!(matches!(restarted.check("hmac:alice", None, now), Err(Refusal::Locked(_))), "still locked");
        assert!(restarted.check("fresh", IP, now).is_err(), "the address still waits");
        // bob's one failure has aged out by the next restart, and is deleted.
        let later = now.plus(LOCKOUT);
        let again = LoginThrottle::default();
        let saved = stored(Changes(vec![
            ("account:hmac:bob".into(), Some(Failures { times: [at(0)].into(), ..Failures::default() })),
            ("nonsense".into(), Some(Failures::default())),
        ]));
        let spent = again.restore(saved, later);
        let deleted: Vec<&str> = spent.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(deleted, ["account:hmac:bob", "nonsense"]);
    }

    #[test]
    fn a_success_deletes_the_accounts_stored_count() {
        let t = LoginThrottle::default();
        t.failed("hmac:alice", None, T0);
        let _ = t.take_changes();
        t.succeeded("hmac:alice");
        let changes = t.take_changes();
        assert_eq!(changes.0.len(), 1);
        assert_eq!((changes.0[0].0.as_str(), changes.0[0].1.is_none()), ("account:hmac:alice", true));
    }

    #[test]
    fn the_rate_limiter_allows_a_burst_then_the_rate() {
        let r = RateLimiter::new(2, 4);
        let ip = IP.unwrap();
        for _ in 0..4 {
            assert_eq!(r.take(ip, T0), Ok(()));
        }
        assert!(r.take(ip, T0).is_err());
        assert_eq!(r.take(ip, T0.plus(Duration::from_millis(500))), Ok(()));
    }
}
