//! A person's second factor as stored: the TOTP secret (sealed), the last
//! step a code was accepted for, a secret handed out but not yet confirmed,
//! the recovery codes' digests. The account keeps it: a local account in its
//! record (`users`), a single sign-on person apart (`sso_people`), for the
//! appliance's own TOTP asked of them when the provider vouches for none.

use serde::{Deserialize, Serialize};

use crate::vault::{self, Keys, Place, Sealed};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Factors {
    /// The confirmed TOTP secret, sealed where it lives.
    pub totp: Option<Sealed>,
    /// The last time step a TOTP code was accepted for (codes work once).
    pub totp_last_step: Option<u64>,
    /// A TOTP secret handed out but not yet confirmed with a code.
    pub totp_pending: Option<Sealed>,
    /// Keyed digests of the recovery codes not yet used.
    pub recovery: Vec<[u8; 32]>,
}

/// Where `name`'s `field` is sealed, `home` being the collection that keeps
/// the person's factors (the AEAD binds the value to it).
pub fn place<'a>(home: &'static str, name: &'a str, field: &'static str) -> Place<'a> {
    Place::new(home, name.as_bytes(), field)
}

impl Factors {
    /// Seals the secrets again under the current data key where an older
    /// one sealed them; says how many moved.
    pub fn refresh_seals(&mut self, home: &'static str, name: &str, keys: &Keys) -> Result<usize, vault::Error> {
        let mut moved = 0;
        for (field, slot) in [("totp", &mut self.totp), ("totp_pending", &mut self.totp_pending)] {
            let Some(sealed) = slot.as_ref() else { continue };
            if let Some(fresh) = keys.refresh(place(home, name, field), sealed)? {
                *slot = Some(fresh);
                moved += 1;
            }
        }
        Ok(moved)
    }
}
