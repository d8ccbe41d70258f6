//! The appliance's own certificate authority, enrollment and renewal: the
//! only module that imports rcgen.
//!
//! One ECDSA P-256 CA signs the server certificate (both listeners) and every
//! worker's client certificate. A worker's identity is decided here, by the
//! broker: the CSR contributes its public key and nothing else (its subject
//! and SANs are ignored). The identity travels in the certificate as the URI
//! SAN `urn:tether:worker:<uuid>`.
//!
//! Enrollment tokens are single use and stored hashed; burning the token,
//! recording the issued certificate and the audit record are one transaction.

mod authority;
mod ca;
mod enroll;
mod expiry;
mod issued;
mod keystore;
mod revocation;
mod rotation;

pub use ca::{
    CA_LIFETIME, CRL_LIFETIME, Ca, CertAndKey, CertError, IssuedCert, PeerCert, RevokedSerial, SERVER_CERT_LIFETIME,
    cert_key_kind, cert_names, cert_validity, csr_key_fingerprint, fingerprint_pem, issued_by, new_worker_key_and_csr,
    peer_cert, renewal_due, server_names, temporary_server_cert,
};
pub use enroll::{
    EnrollError, EnrollmentToken, Refused, WorkerRecord, bound_worker, confirm_newest, create_enrollment_token, enroll,
    get_worker, list_workers, newest_unconfirmed, outstanding_tokens, refused_event, renew, set_labels,
    unapproved_worker_keys, unapproved_worker_keys_refusal,
};
pub use expiry::{ExpiryAlert, ExpiryError, Watched, alerts as expiry_alerts, record_alerts as record_expiry_alerts};
pub use keystore::{CaSlot, has_ca_key, load_ca, refresh_ca_key, store_ca_key};
pub use revocation::{CrlError, Revocation, Revoked, crl_pem, revoke, sign_crl};
pub use rotation::{
    BundleDeliveries, CaSet, Cleared, Phase, Rotation, RotationError, WorkerProgress, add as add_ca, clear_to_issue,
    clear_to_retire, clear_to_roll_back, progress as rotation_progress, retire as retire_ca,
    rollback as roll_back_rotation, start_issuing, worker_issuer,
};

pub use authority::{Authority, AuthorityParts, Enrollment, Renewal, RotationStep};

/// The CA certificate in the data directory (public; workers are given it).
pub const CA_CERT: &str = "ca.pem";
/// The server certificate and its key. The key stays a file (0600): the
/// listeners must answer (health, unseal) while the vault is sealed.
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";
