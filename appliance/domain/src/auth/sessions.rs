//! Console sessions: an opaque id in a cookie, stored as its SHA-256; an
//! absolute and an idle lifetime; the time of the last authentication, for
//! actions that need it fresh.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AuthError, Principal, Via};
use tether_base::clock::Timestamp;
use tether_base::secret;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// The cookie's name. `__Host-` makes browsers insist on Secure, Path=/
/// and no Domain, so no other host can set or read it.
pub const COOKIE: &str = "__Host-tether_session";
const PREFIX: &str = "tsess_";

/// Keyed by SHA-256 of the cookie's value.
const SESSIONS: Collection<Session> = Collection::new("sessions");
/// Sessions waiting for the appliance's own second factor (a single
/// sign-on whose provider vouched for none), by the session's key.
const AWAITING_SECOND_FACTOR: Collection<()> = Collection::new("sessions_awaiting_second_factor");

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub absolute: Duration,
    pub idle: Duration,
    /// How recent the last authentication must be for sensitive actions.
    pub reauth: Duration,
}

impl Lifetimes {
    /// How stale "last seen" may get before a request writes it again:
    /// a busy session costs a write a minute, and idle expiry stays within
    /// a quarter of the idle time of the truth.
    pub fn touch_after(&self) -> Duration {
        (self.idle / 4).min(Duration::from_secs(60))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Public id (first 8 bytes of the hash, hex): safe to log and list.
    pub id: String,
    pub user: String,
    pub created_at: Timestamp,
    pub last_seen: Timestamp,
    /// The last time the person proved who they are (login or reauth).
    pub authenticated_at: Timestamp,
}

/// Starts a session for a person who last proved who they are at
/// `authenticated_at` (now, for a password login); returns it, the cookie
/// value and its storage key.
pub fn start(
    tx: &mut WriteTx<'_>,
    user: &str,
    now: Timestamp,
    authenticated_at: Timestamp,
) -> Result<(Session, String, [u8; 32]), store::Error> {
    let secret::Minted { secret: value, key, id } = secret::mint(PREFIX)?;
    let session = Session { id, user: user.into(), created_at: now, last_seen: now, authenticated_at };
    tx.put(SESSIONS, &key, &session)?;
    Ok((session, value, key))
}

/// The storage key of a presented cookie value, if it is shaped like one.
pub fn key_of(presented: &str) -> Option<[u8; 32]> {
    secret::storage_key(presented, PREFIX)
}

/// The session behind a cookie, if it is alive at `now`.
pub fn find(
    tx: &ReadTx,
    key: &[u8; 32],
    now: Timestamp,
    lifetimes: Lifetimes,
) -> Result<Result<Session, AuthError>, store::Error> {
    let Some(session) = tx.get(SESSIONS, key)? else {
        return Ok(Err(AuthError::Unknown));
    };
    Ok(alive(&session, now, lifetimes).map(|()| session))
}

/// The rule: dead once the absolute lifetime has passed since login, or the
/// idle time since the last request.
pub fn alive(session: &Session, now: Timestamp, lifetimes: Lifetimes) -> Result<(), AuthError> {
    if now.since(session.created_at) >= lifetimes.absolute || now.since(session.last_seen) >= lifetimes.idle {
        return Err(AuthError::Expired);
    }
    Ok(())
}

/// The principal a live session acts as: `name` with `role`; `set_up`
/// as [`Via::Session`] describes.
pub fn principal(
    session: Session,
    key: [u8; 32],
    (name, role, set_up): (String, super::Role, bool),
    now: Timestamp,
    lifetimes: Lifetimes,
) -> Principal {
    Principal {
        name,
        role,
        via: Via::Session {
            id: session.id,
            key,
            set_up,
            fresh: now.since(session.authenticated_at) < lifetimes.reauth,
            note_use: now.since(session.last_seen) >= lifetimes.touch_after(),
        },
    }
}

/// Records a request on the session (for idle expiry).
pub fn touch(tx: &mut WriteTx<'_>, key: &[u8; 32], now: Timestamp) -> Result<(), store::Error> {
    if let Some(mut s) = tx.get(SESSIONS, key)? {
        s.last_seen = now;
        tx.put(SESSIONS, key, &s)?;
    }
    Ok(())
}

/// The person proved themselves again: sensitive actions are open for the
/// re-authentication window.
pub fn reauthenticated(tx: &mut WriteTx<'_>, key: &[u8; 32], now: Timestamp) -> Result<bool, store::Error> {
    let Some(mut s) = tx.get(SESSIONS, key)? else { return Ok(false) };
    s.authenticated_at = now;
    s.last_seen = now;
    tx.put(SESSIONS, key, &s)?;
    Ok(true)
}

/// The session may do nothing but give its second factor (or enroll one).
pub fn await_second_factor(tx: &mut WriteTx<'_>, key: &[u8; 32]) -> Result<(), store::Error> {
    tx.put(AWAITING_SECOND_FACTOR, key, &())
}

/// Whether the session waits for its second factor.
pub fn awaits_second_factor(mut tx: impl store::Reads, key: &[u8; 32]) -> Result<bool, store::Error> {
    Ok(tx.get(AWAITING_SECOND_FACTOR, key)?.is_some())
}

/// The session's second factor was given.
pub fn second_factor_given(tx: &mut WriteTx<'_>, key: &[u8; 32]) -> Result<(), store::Error> {
    tx.delete(AWAITING_SECOND_FACTOR, key).map(|_| ())
}

/// Deletes a session and what waits on it.
fn forget(tx: &mut WriteTx<'_>, key: &[u8]) -> Result<(), store::Error> {
    tx.delete(SESSIONS, key)?;
    tx.delete(AWAITING_SECOND_FACTOR, key).map(|_| ())
}

/// Ends one session (logout). Returns it, if it existed.
pub fn end(tx: &mut WriteTx<'_>, key: &[u8; 32]) -> Result<Option<Session>, store::Error> {
    let s = tx.get(SESSIONS, key)?;
    if s.is_some() {
        forget(tx, key)?;
    }
    Ok(s)
}

/// Ends one session if it is `user`'s. Returns whether it did.
pub fn end_if_owned_by(tx: &mut WriteTx<'_>, key: &[u8; 32], user: &str) -> Result<bool, store::Error> {
    if tx.get(SESSIONS, key)?.is_some_and(|s| s.user == user) {
        forget(tx, key)?;
        return Ok(true);
    }
    Ok(false)
}

/// Ends every session of `user`. Returns how many.
pub fn end_all_of(tx: &mut WriteTx<'_>, user: &str) -> Result<usize, store::Error> {
    end_all_of_except(tx, user, None)
}

/// Ends every session of `user` but `keep`. Returns how many.
pub fn end_all_of_except(tx: &mut WriteTx<'_>, user: &str, keep: Option<&[u8; 32]>) -> Result<usize, store::Error> {
    let mut doomed = Vec::new();
    tx.scan(SESSIONS, None, Order::Ascending, |key, s: Session| {
        if s.user == user && keep.is_none_or(|k| k[..] != *key) {
            doomed.push(key.to_vec());
        }
        Ok(true)
    })?;
    for key in &doomed {
        forget(tx, key)?;
    }
    Ok(doomed.len())
}

/// Deletes sessions that can no longer be used. Returns how many.
pub fn sweep(tx: &mut WriteTx<'_>, now: Timestamp, lifetimes: Lifetimes) -> Result<usize, store::Error> {
    let mut dead = Vec::new();
    tx.scan(SESSIONS, None, Order::Ascending, |key, s: Session| {
        if alive(&s, now, lifetimes).is_err() {
            dead.push(key.to_vec());
        }
        Ok(true)
    })?;
    for key in &dead {
        forget(tx, key)?;
    }
    Ok(dead.len())
}

/// Live sessions, for the console's list.
pub fn list(
    tx: &ReadTx,
    user: Option<&str>,
    now: Timestamp,
    lifetimes: Lifetimes,
) -> Result<Vec<Session>, store::Error> {
    let mut out = Vec::new();
    tx.scan(SESSIONS, None, Order::Ascending, |_, s: Session| {
        if user.is_none_or(|u| u == s.user) && alive(&s, now, lifetimes).is_ok() {
            out.push(s);
        }
        Ok(true)
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_base::clock::{Clock, ManualClock};

    const LIFETIMES: Lifetimes = Lifetimes {
        absolute: Duration::from_secs(8 * 3600),
        idle: Duration::from_secs(30 * 60),
        reauth: Duration::from_secs(10 * 60),
    };

    fn session(at: Timestamp) -> Session {
        Session { id: "x".into(), user: "u".into(), created_at: at, last_seen: at, authenticated_at: at }
    }

    #[test]
    fn a_session_dies_after_30_idle_minutes() {
        let clock = ManualClock::at(Timestamp::from_millis(1_800_000_000_000));
        let s = session(clock.now());
        clock.advance(Duration::from_secs(29 * 60 + 59));
        assert_eq!(alive(&s, clock.now(), LIFETIMES), Ok(()));
        clock.advance(Duration::from_secs(1));
        assert_eq!(alive(&s, clock.now(), LIFETIMES), Err(AuthError::Expired));
    }

    #[test]
    fn a_busy_session_still_dies_8_hours_after_login() {
        let clock = ManualClock::at(Timestamp::from_millis(1_800_000_000_000));
        let mut s = session(clock.now());
        for _ in 0..(8 * 4 - 1) {
            clock.advance(Duration::from_secs(15 * 60));
            assert_eq!(alive(&s, clock.now(), LIFETIMES), Ok(()), "used every 15 minutes");
            s.last_seen = clock.now();
        }
        clock.advance(Duration::from_secs(15 * 60));
        assert_eq!(alive(&s, clock.now(), LIFETIMES), Err(AuthError::Expired));
    }

    #[test]
    fn last_seen_is_written_at_most_once_a_minute_or_a_quarter_of_the_idle_time() {
        assert_eq!(LIFETIMES.touch_after(), Duration::from_secs(60));
        let short = Lifetimes { idle: Duration::from_secs(8), ..LIFETIMES };
        assert_eq!(short.touch_after(), Duration::from_secs(2));
    }
}
