//! The rescue login at the machine itself: a root shell from its own
//! screen or serial console (`tether screen`), for repairs, opened only by
//! a password chosen during setup. Without one there is no login at the
//! machine at all (the image has no other).
//!
//! The password is kept like people's ([`PasswordHash`]: Argon2id, or
//! PBKDF2 under the FIPS policy) in [`RESCUE_LOGIN_FILE`] in the data
//! directory, readable by the appliance's user and root only.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::password::{PasswordError, PasswordHash};
use tether_base::crypto::CryptoPolicy;
use tether_base::files::IoError;

/// The file in the data directory holding the rescue password's hash.
pub const RESCUE_LOGIN_FILE: &str = "rescue-login.json";

/// The account the rescue login opens (for the strength rule's name check).
const ACCOUNT: &str = "root";

#[derive(Serialize, Deserialize)]
struct Stored {
    password: PasswordHash,
}

/// Why the rescue password could not be set or checked.
#[derive(Debug, thiserror::Error)]
pub enum RescueError {
    #[error("the rescue password: {0}")]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{RESCUE_LOGIN_FILE} is damaged ({0}); set the rescue password again")]
    Damaged(String),
}

/// Sets the rescue password (slow: run it off the async runtime).
pub fn set(dir: &Path, policy: CryptoPolicy, password: &str) -> Result<(), RescueError> {
    let stored = Stored { password: PasswordHash::new(policy, ACCOUNT, password)? };
    let text = serde_json::to_vec(&stored).map_err(|e| RescueError::Damaged(e.to_string()))?;
    tether_base::files::write_private(&dir.join(RESCUE_LOGIN_FILE), &text)?;
    Ok(())
}

/// Whether a rescue password was set.
pub fn is_set(dir: &Path) -> bool {
    dir.join(RESCUE_LOGIN_FILE).exists()
}

/// Whether `password` is the rescue password; `false` when none was set.
/// Either KDF is accepted: the hash was made under the policy chosen at
/// setup, and the machine's console is not the appliance's crypto boundary.
pub fn check(dir: &Path, password: &str) -> Result<bool, RescueError> {
    let path = dir.join(RESCUE_LOGIN_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(IoError::new(format!("read {}", path.display()), e).into()),
    };
    let stored: Stored = serde_json::from_slice(&text).map_err(|e| RescueError::Damaged(e.to_string()))?;
    Ok(stored.password.verify(CryptoPolicy::STANDARD, password)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_password_set_opens_it_and_none_set_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_set(dir.path()));
        assert!(!check(dir.path(), "anything at all here").unwrap());
        assert!(matches!(
            set(dir.path(), CryptoPolicy::STANDARD, "short"),
            Err(RescueError::Password(PasswordError::TooShort))
        ));
        set(dir.path(), CryptoPolicy::FIPS, "the rescue passphrase").unwrap();
        assert!(is_set(dir.path()));
        assert!(check(dir.path(), "the rescue passphrase").unwrap());
        assert!(!check(dir.path(), "the rescue passphrasf").unwrap());
        let text = std::fs::read_to_string(dir.path().join(RESCUE_LOGIN_FILE)).unwrap();
        assert!(!text.contains("rescue passphrase"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(RESCUE_LOGIN_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(RESCUE_LOGIN_FILE), b"{").unwrap();
        assert!(matches!(check(dir.path(), "the rescue passphrase"), Err(RescueError::Damaged(_))));
    }
}
