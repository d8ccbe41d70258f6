//! What every other crate stands on: time as a parameter ([`clock`]), id
//! newtypes ([`ids`]), crash-safe state files ([`files`]), PEM armour
//! ([`pem`]), the one rule for names and labels ([`labels`]), how much of
//! outside input is kept ([`bounded`]), random bearer secrets ([`secret`]),
//! the crypto policy and the one library every primitive comes from
//! ([`crypto`]), and every TLS configuration built from that policy
//! ([`tls`]). It knows nothing of the store or the domain.

/// The cause an error carries when more than one kind of failure can be
/// behind it: kept as the error's source, never flattened to a string.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

pub mod bounded;
pub mod clock;
pub mod crypto;
pub mod files;
pub mod ids;
pub mod labels;
pub mod pem;
pub mod secret;
pub mod tls;
