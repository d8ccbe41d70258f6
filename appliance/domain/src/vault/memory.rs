//! Key material in memory, and the process settings that keep it there.
//!
//! A [`KeyBytes`] is a 256-bit key in its own heap allocation: locked into
//! RAM (never written to swap) where the system allows, wiped when dropped,
//! and printed only as a mask. [`harden_process`] turns core dumps off and
//! makes the process non-dumpable, so neither a crash nor `gcore` nor a
//! non-root `ptrace` can copy the keys out.
//!
//! This file holds the project's one `unsafe` block: `mlock` takes a raw
//! pointer.

use std::sync::atomic::{AtomicBool, Ordering};

use tether_base::crypto::primitives::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroize;

use tether_base::secret::RandomFailed;

pub const KEY_LEN: usize = 32;

/// Whether every key so far could be locked into RAM (`false` once one could
/// not: RLIMIT_MEMLOCK too small, or the call is not permitted).
static ALL_LOCKED: AtomicBool = AtomicBool::new(true);

/// A 256-bit key. Wiped on drop, locked in RAM where allowed, never printed.
pub struct KeyBytes(Box<[u8; KEY_LEN]>);

impl KeyBytes {
    /// A fresh key from the system random source.
    pub fn random() -> Result<KeyBytes, RandomFailed> {
        let mut key = KeyBytes::zeroed();
        SystemRandom::new().fill(&mut key.0[..]).map_err(|_| RandomFailed)?;
        Ok(key)
    }

    /// Copies a key out of `bytes`, which must be exactly [`KEY_LEN`] long.
    /// The caller wipes its own copy.
    pub fn from_slice(bytes: &[u8]) -> Option<KeyBytes> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut key = KeyBytes::zeroed();
        key.0.copy_from_slice(bytes);
        Some(key)
    }

    /// The allocation is made (and locked) before any key byte is written
    /// into it, so the key never sits in unlocked memory first.
    fn zeroed() -> KeyBytes {
        let mut boxed = Box::new([0u8; KEY_LEN]);
        lock(&mut boxed[..]);
        KeyBytes(boxed)
    }

    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for KeyBytes {
    fn drop(&mut self) {
        // The page stays locked: other keys may share it, and `munlock` does
        // not count. A few locked pages per appliance are the cost.
        self.0.zeroize();
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes(****)")
    }
}

/// Locks the pages under `buf` into RAM; remembers a failure for the status
/// report instead of failing, since an appliance with a small
/// RLIMIT_MEMLOCK must still run.
fn lock(buf: &mut [u8]) {
    // SAFETY: `buf` is a live, exclusively borrowed allocation; mlock only
    // changes how the kernel pages the range and never reads or writes it.
    #[allow(unsafe_code)]
    let locked = unsafe { rustix::mm::mlock(buf.as_mut_ptr().cast(), buf.len()) };
    if locked.is_err() && ALL_LOCKED.swap(false, Ordering::Relaxed) {
        tracing::warn!("cannot lock key memory into RAM (raise RLIMIT_MEMLOCK); keys may reach swap");
    }
}

/// What [`harden_process`] achieved, for the status report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Hardening {
    pub core_dumps_off: bool,
    pub not_dumpable: bool,
    pub keys_locked_in_ram: bool,
}

/// Core dumps off (RLIMIT_CORE 0) and the process marked not dumpable.
/// Call once at start, before any key exists.
pub fn harden_process() -> Hardening {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    let zero = Rlimit { current: Some(0), maximum: Some(0) };
    let core_dumps_off = setrlimit(Resource::Core, zero).is_ok();
    let not_dumpable = set_dumpable_behavior(DumpableBehavior::NotDumpable).is_ok();
    if !(core_dumps_off && not_dumpable) {
        tracing::warn!(core_dumps_off, not_dumpable, "could not fully protect key memory from dumps");
    }
    hardening_now(core_dumps_off, not_dumpable)
}

fn hardening_now(core_dumps_off: bool, not_dumpable: bool) -> Hardening {
    Hardening { core_dumps_off, not_dumpable, keys_locked_in_ram: ALL_LOCKED.load(Ordering::Relaxed) }
}

/// The process's protection as it stands (asks the kernel again).
pub fn hardening() -> Hardening {
    use rustix::process::{DumpableBehavior, Resource, dumpable_behavior, getrlimit};
    let core = getrlimit(Resource::Core);
    let core_dumps_off = core.current == Some(0);
    let not_dumpable = matches!(dumpable_behavior(), Ok(DumpableBehavior::NotDumpable));
    hardening_now(core_dumps_off, not_dumpable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print_and_are_distinct() {
        let a = KeyBytes::random().unwrap();
        let b = KeyBytes::random().unwrap();
        assert_ne!(a.expose(), b.expose());
        let shown = format!("{a:?}");
        assert_eq!(shown, "KeyBytes(****)");
        assert!(KeyBytes::from_slice(&[1; 31]).is_none());
        assert_eq!(KeyBytes::from_slice(&[7; 32]).unwrap().expose(), &[7; 32]);
    }

    #[test]
    fn hardening_turns_dumps_off() {
        // nextest runs each test in its own process, so this changes no other test.
        let h = harden_process();
        assert!(h.core_dumps_off && h.not_dumpable, "{h:?}");
        assert_eq!(hardening(), h);
    }
}
