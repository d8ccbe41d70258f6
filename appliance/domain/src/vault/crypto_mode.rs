//! The crypto mode this data directory runs in, kept in the store. It is
//! chosen at `init` and changed only through [`super::Vault::change_crypto_mode`]
//! (a re-authenticated officer), and takes effect at the next start.

use tether_base::crypto::{CryptoPolicy, Mode};
use tether_store::{Collection, ReadTx, WriteTx};

/// The mode the appliance runs in (absent: standard).
const POLICY: Collection<Mode> = Collection::new("crypto_policy");
const MODE_KEY: &[u8] = b"mode";

/// The policy stored in this data directory.
pub fn stored(tx: &ReadTx) -> Result<CryptoPolicy, tether_store::Error> {
    Ok(CryptoPolicy { mode: tx.get(POLICY, MODE_KEY)?.unwrap_or_default() })
}

/// Records the mode; it takes effect at the next start.
pub fn store_mode(tx: &mut WriteTx<'_>, mode: Mode) -> Result<(), tether_store::Error> {
    tx.put(POLICY, MODE_KEY, &mode)
}
