//! Certificates: the CA itself, the server certificate, worker certificates.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, RevocationReason, RevokedCertParams, SanType,
    SerialNumber,
};
use tether_base::Cause;
use tether_base::crypto::primitives::rand::{SecureRandom, SystemRandom};

use tether_base::clock::Timestamp;
use tether_base::crypto::primitives::digest::{SHA256, digest};
use tether_base::crypto::{CryptoPolicy, KeyKind};
use tether_base::ids::WorkerId;
use tether_base::tls::fingerprint_der;

/// How long the CA is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the listeners' server certificate is valid.
pub const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this far in the past, so a worker whose clock runs a
/// little behind the appliance's still accepts a freshly issued one.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
const WORKER_URI_PREFIX: &str = "urn:tether:worker:";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("could not generate a key: {0}")]
    KeyGeneration(#[source] Cause),
    #[error("the certificate signing request is not valid: {0}")]
    CsrInvalid(#[source] rcgen::Error),
    #[error("the CSR's key is refused: {0} (use ECDSA P-256 or P-384)")]
    CsrKeyType(tether_base::crypto::NotApproved),
    #[error("could not sign the certificate: {0}")]
    Signing(#[source] Cause),
    #[error("not a usable certificate: {0}")]
    BadCertificate(#[source] Cause),
    #[error("the stored CA material does not load: {0}")]
    BadCa(#[source] Cause),
    #[error(transparent)]
    Vault(#[from] crate::vault::Error),
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// A worker certificate the CA just issued.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub serial: String,
    pub not_after: Timestamp,
    /// `sha256:<hex>` of the certified public key (see [`csr_key_fingerprint`]).
    pub key_fingerprint: String,
    /// What kind of key it certifies.
    pub key_kind: KeyKind,
    /// The fingerprint of the CA that signed it.
    pub issuer: String,
}

/// The loaded CA: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| CertError::KeyGeneration("random source failed".into()))?;
    bytes[0] &= 0x7f; // a positive INTEGER
    bytes[0] |= 0x01; // and no leading zero byte to trim
    Ok(SerialNumber::from_slice(&bytes))
}

/// A temporary self-signed server certificate and its new key, for setup
/// mode (before there is a CA): the browser is told to check its
/// fingerprint, which `serve` prints.
pub fn temporary_server_cert(names: &[String], now: Timestamp, lifetime: Duration) -> Result<CertAndKey, CertError> {
    let key = new_key()?;
    let cert = server_params(names, now, lifetime)?.self_signed(&key).map_err(|e| CertError::Signing(e.into()))?;
    Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A server certificate's parameters: the names as SANs, server auth only.
fn server_params(names: &[String], now: Timestamp, lifetime: Duration) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Tether appliance");
    params.distinguished_name = dn;
    for name in server_names(names) {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|_| CertError::Signing(format!("{name:?} is not a valid DNS name").into()))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, lifetime);
    Ok(params)
}

fn new_key() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CertError::KeyGeneration(e.into()))
}

fn validity(params: &mut CertificateParams, now: Timestamp, lifetime: Duration) {
    params.not_before = now.to_offset_date_time() - BACKDATE;
    params.not_after = now.plus(lifetime).to_offset_date_time();
}

fn pem_to_der(pem: &str, label: &str) -> Result<Vec<u8>, CertError> {
    let mut reader = pem.as_bytes();
    for item in rustls_pemfile::read_all(&mut reader) {
        if let Ok(rustls_pemfile::Item::X509Certificate(der)) = item {
            return Ok(der.to_vec());
        }
    }
    Err(CertError::BadCertificate(format!("no {label} certificate in the PEM").into()))
}

/// `sha256:<hex>` of the first certificate in a PEM.
pub fn fingerprint_pem(pem: &str) -> Result<String, CertError> {
    pem_to_der(pem, "a").map(|der| fingerprint_der(&der))
}

/// The kind of key the first certificate in `pem` holds.
pub fn cert_key_kind(pem: &str) -> Result<KeyKind, CertError> {
    let der = pem_to_der(pem, "a")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| CertError::BadCertificate(e.into()))?;
    let spki = rcgen::SubjectPublicKeyInfo::from_der(cert.tbs_certificate.subject_pki.raw)
        .map_err(|e| CertError::BadCertificate(e.into()))?;
    Ok(key_kind(rcgen::PublicKeyData::algorithm(&spki)))
}

impl Ca {
    /// A brand-new CA.
    pub fn create(now: Timestamp) -> Result<(Ca, CertAndKey), CertError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Tether appliance");
        // A name of its own (from its key): during a rotation two CAs stand
        // side by side, and a certificate's issuer name tells them apart.
        let key_id = hex::encode(&digest(&SHA256, rcgen::PublicKeyData::der_bytes(&key)).as_ref()[..6]);
        name.push(DnType::CommonName, format!("Tether CA {key_id}"));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial()?);
        validity(&mut params, now, CA_LIFETIME);
        let cert = params.self_signed(&key).map_err(|e| CertError::Signing(e.into()))?;
        let material = CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        let ca = Ca::load(&material.cert_pem, &material.key_pem)?;
        Ok((ca, material))
    }

    /// Loads a CA from its PEM certificate and key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::BadCa(e.into()))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| CertError::BadCa(e.into()))?;
        let cert_der = pem_to_der(cert_pem, "CA")?;
        Ok(Ca { cert_pem: cert_pem.into(), cert_der, issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn fingerprint(&self) -> String {
        fingerprint_der(&self.cert_der)
    }

    /// The server certificate for both listeners. `names` may hold DNS names
    /// and IP addresses; localhost, 127.0.0.1 and ::1 are always included.
    pub fn issue_server_cert(
        &self,
        names: &[String],
        now: Timestamp,
        lifetime: Duration,
    ) -> Result<CertAndKey, CertError> {
        self.issue_server_cert_for(&new_key()?, names, now, lifetime)
    }

    /// As [`Ca::issue_server_cert`], for a key the appliance already holds
    /// (PEM): setup mode's, so the certificate the browser met during setup
    /// and the one after it share their key.
    pub fn issue_server_cert_for_key(
        &self,
        key_pem: &str,
        names: &[String],
        now: Timestamp,
        lifetime: Duration,
    ) -> Result<CertAndKey, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::KeyGeneration(e.into()))?;
        self.issue_server_cert_for(&key, names, now, lifetime)
    }

    fn issue_server_cert_for(
        &self,
        key: &KeyPair,
        names: &[String],
        now: Timestamp,
        lifetime: Duration,
    ) -> Result<CertAndKey, CertError> {
        let params = server_params(names, now, lifetime)?;
        let cert = params.signed_by(key, &self.issuer).map_err(|e| CertError::Signing(e.into()))?;
        Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a worker's CSR with the identity the broker chose.
    pub fn sign_worker_csr(
        &self,
        policy: CryptoPolicy,
        csr_pem: &str,
        worker: WorkerId,
        now: Timestamp,
        lifetime: Duration,
    ) -> Result<IssuedCert, CertError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CertError::CsrInvalid)?;
        let kind = key_kind(csr.public_key.algorithm());
        policy.check_worker_key(kind).map_err(CertError::CsrKeyType)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("tether worker {worker}"));
        params.distinguished_name = dn;
        let uri = format!("{WORKER_URI_PREFIX}{worker}");
        params.subject_alt_names =
            vec![SanType::URI(uri.try_into().map_err(|_| CertError::Signing("worker URI".into()))?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let serial = random_serial()?;
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, now, lifetime);
        let key_fingerprint = key_fingerprint(&csr.public_key);
        let request = CertificateSigningRequestParams { params, public_key: csr.public_key };
        let cert = request.signed_by(&self.issuer).map_err(|e| CertError::Signing(e.into()))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            serial: serial_hex,
            not_after: now.plus(lifetime),
            key_fingerprint,
            key_kind: kind,
            issuer: self.fingerprint(),
        })
    }
}

/// One entry of a CRL: a certificate's serial (hex) and when it was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSerial {
    pub serial: String,
    pub revoked_at: Timestamp,
}

/// How long a CRL says it stays current; consumers fetch it again sooner
/// when a revocation matters to them.
pub const CRL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

impl Ca {
    /// A CRL (DER) signed by this CA listing `revoked`, numbered `number`.
    pub fn sign_crl(&self, revoked: &[RevokedSerial], number: u64, now: Timestamp) -> Result<Vec<u8>, CertError> {
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for r in revoked {
            let serial = hex::decode(&r.serial).map_err(|_| CertError::BadCertificate("a stored serial".into()))?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: r.revoked_at.to_offset_date_time(),
                reason_code: Some(RevocationReason::CessationOfOperation),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now.to_offset_date_time(),
            next_update: now.plus(CRL_LIFETIME).to_offset_date_time(),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).map_err(|e| CertError::Signing(e.into()))?;
        Ok(crl.der().to_vec())
    }
}

/// `sha256:<hex>` of the public key (its SubjectPublicKeyInfo) a CSR carries,
/// after checking the CSR's signature.
pub fn csr_key_fingerprint(csr_pem: &str) -> Result<String, CertError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CertError::CsrInvalid)?;
    Ok(key_fingerprint(&csr.public_key))
}

fn key_fingerprint(key: &impl rcgen::PublicKeyData) -> String {
    fingerprint_der(&key.subject_public_key_info())
}

/// A worker-side key pair and the CSR that carries its public key.
pub fn new_worker_key_and_csr() -> Result<(String, String), CertError> {
    let key = new_key()?;
    let params = CertificateParams::default();
    let csr = params.serialize_request(&key).map_err(|e| CertError::Signing(e.into()))?;
    let csr_pem = csr.pem().map_err(|e| CertError::Signing(e.into()))?;
    Ok((key.serialize_pem(), csr_pem))
}

/// What the appliance learns from a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub worker: WorkerId,
    pub serial: String,
    pub not_after: Timestamp,
}

/// Reads the worker identity out of a client certificate that rustls has
/// already verified against the CA. `None` if it names no worker.
pub fn peer_cert(der: &[u8]) -> Option<PeerCert> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let sans = cert.subject_alternative_name().ok()??;
    let worker = sans.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => uri.strip_prefix(WORKER_URI_PREFIX)?.parse().ok(),
        _ => None,
    })?;
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).ok()?.saturating_mul(1000);
    Some(PeerCert { worker, serial: hex::encode(cert.raw_serial()), not_after: Timestamp::from_millis(not_after) })
}

/// The names a server certificate for `configured` carries: those, plus
/// localhost, 127.0.0.1 and ::1; sorted, without repeats.
pub fn server_names(configured: &[String]) -> Vec<String> {
    let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    all.extend(configured.iter().cloned());
    all.sort();
    all.dedup();
    all
}

/// Whether the first certificate in `cert_pem` names the CA in `ca_pem` as
/// its issuer. Every CA made here has a name of its own, so the name tells
/// which of the (at most two) CAs issued a certificate of ours.
pub fn issued_by(cert_pem: &str, ca_pem: &str) -> Result<bool, CertError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (cert, ca) = (pem_to_der(cert_pem, "a")?, pem_to_der(ca_pem, "CA")?);
    let parse = |der| X509Certificate::from_der(der).map(|(_, c)| c).map_err(|e| CertError::BadCertificate(e.into()));
    let (cert, ca) = (parse(&cert)?, parse(&ca)?);
    Ok(cert.issuer().as_raw() == ca.subject().as_raw())
}

/// The DNS names and IP addresses a certificate's SANs name, sorted.
pub fn cert_names(pem: &str) -> Result<Vec<String>, CertError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let der = pem_to_der(pem, "a")?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| CertError::BadCertificate(e.into()))?;
    let mut names = Vec::new();
    if let Ok(Some(sans)) = cert.subject_alternative_name() {
        for name in &sans.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    names.sort();
    Ok(names)
}

/// When a certificate issued here should be renewed: two thirds of the way
/// from its issue to its expiry, moved by up to ±10 % of that span. The shift
/// comes from the certificate's fingerprint: a fleet enrolled together
/// spreads its renewals, and a worker that restarts keeps its time. (The
/// `not_before` is backdated by [`BACKDATE`] for clock skew; that margin is
/// not part of the lifetime.)
pub fn renewal_due(cert_pem: &str) -> Result<Timestamp, CertError> {
    let (not_before, not_after) = cert_validity(cert_pem)?;
    let issued = not_before.plus(BACKDATE).min(not_after);
    let nominal = not_after.since(issued) * 2 / 3;
    let spread = nominal / 10;
    let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX / 4);
    let fingerprint = digest(&SHA256, &pem_to_der(cert_pem, "a")?);
    let draw = fingerprint.as_ref().iter().take(8).fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let offset = Duration::from_millis(draw % (2 * spread_ms + 1));
    Ok(issued.plus(nominal.saturating_sub(spread)).plus(offset))
}

/// The validity window of the first certificate in a PEM.
pub fn cert_validity(pem: &str) -> Result<(Timestamp, Timestamp), CertError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = pem_to_der(pem, "a")?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| CertError::BadCertificate(e.into()))?;
    let secs = |t: i64| Timestamp::from_millis(u64::try_from(t).unwrap_or(0).saturating_mul(1000));
    Ok((secs(cert.validity().not_before.timestamp()), secs(cert.validity().not_after.timestamp())))
}

/// What the crypto policy calls a key of this rcgen algorithm.
pub(super) fn key_kind(alg: &rcgen::SignatureAlgorithm) -> KeyKind {
    if alg == &PKCS_ECDSA_P256_SHA256 {
        KeyKind::EcdsaP256
    } else if alg == &PKCS_ECDSA_P384_SHA384 {
        KeyKind::EcdsaP384
    } else if alg == &PKCS_ED25519 {
        KeyKind::Ed25519
    } else {
        KeyKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_795_000_000_000);

    #[test]
    fn the_ca_decides_the_worker_identity_not_the_csr() {
        let (ca, material) = Ca::create(NOW).unwrap();
        assert!(material.cert_pem.contains("BEGIN CERTIFICATE"));
        let (_key, csr) = new_worker_key_and_csr().unwrap();
        let worker = WorkerId::new();
        let issued = ca.sign_worker_csr(CryptoPolicy::STANDARD, &csr, worker, NOW, Duration::from_secs(3600)).unwrap();
        let der = pem_to_der(&issued.cert_pem, "worker").unwrap();
        let peer = peer_cert(&der).unwrap();
        assert_eq!(peer.worker, worker);
        assert_eq!(peer.serial, issued.serial);
        assert_eq!(peer.not_after, NOW.plus(Duration::from_secs(3600)));
        let due = renewal_due(&issued.cert_pem).unwrap();
        assert!(due >= NOW.plus(Duration::from_secs(2160)) && due <= NOW.plus(Duration::from_secs(2640)), "{due:?}");
    }

    #[test]
    fn renewals_fall_within_ten_percent_of_two_thirds_and_spread_out() {
        let (ca, _) = Ca::create(NOW).unwrap();
        let lifetime = Duration::from_secs(3000);
        let dues: Vec<Timestamp> = (0..40)
            .map(|_| {
                let (_key, csr) = new_worker_key_and_csr().unwrap();
                let issued = ca.sign_worker_csr(CryptoPolicy::STANDARD, &csr, WorkerId::new(), NOW, lifetime).unwrap();
                let due = renewal_due(&issued.cert_pem).unwrap();
                assert_eq!(due, renewal_due(&issued.cert_pem).unwrap(), "the same certificate, the same time");
                due
            })
            .collect();
        let (earliest, latest) = (NOW.plus(Duration::from_secs(1800)), NOW.plus(Duration::from_secs(2200)));
        assert!(dues.iter().all(|d| *d >= earliest && *d <= latest), "{dues:?}");
        let distinct: std::collections::BTreeSet<_> = dues.iter().collect();
        assert!(distinct.len() > 30, "renewals spread out: {} distinct times of 40", distinct.len());
    }

    #[test]
    fn a_garbled_csr_is_refused() {
        let (ca, _) = Ca::create(NOW).unwrap();
        let (_key, csr) = new_worker_key_and_csr().unwrap();
        // Change one base64 character inside the signed body: the signature no longer matches.
        let mut lines: Vec<String> = csr.lines().map(String::from).collect();
        let c = if lines[2].as_bytes()[10] == b'A' { "B" } else { "A" };
        lines[2].replace_range(10..11, c);
        let garbled = lines.join("\n");
        assert!(matches!(
            ca.sign_worker_csr(CryptoPolicy::STANDARD, &garbled, WorkerId::new(), NOW, Duration::from_secs(60)),
            Err(CertError::CsrInvalid(_))
        ));
        assert!(
            ca.sign_worker_csr(CryptoPolicy::STANDARD, "not pem", WorkerId::new(), NOW, Duration::from_secs(60))
                .is_err()
        );
    }

    #[test]
    fn fips_mode_refuses_an_ed25519_worker_key_that_standard_mode_accepts() {
        let (ca, _) = Ca::create(NOW).unwrap();
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let csr = CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        let sign = |policy| ca.sign_worker_csr(policy, &csr, WorkerId::new(), NOW, Duration::from_secs(60));
        assert!(sign(CryptoPolicy::STANDARD).is_ok());
        let refused = sign(CryptoPolicy::FIPS).unwrap_err();
        assert!(matches!(refused, CertError::CsrKeyType(_)), "{refused:?}");
        assert!(refused.to_string().contains("Ed25519, which fips mode does not allow"), "{refused}");
    }

    #[test]
    fn a_ca_reloads_from_its_pem_and_keeps_its_fingerprint() {
        let (ca, material) = Ca::create(NOW).unwrap();
        let again = Ca::load(&material.cert_pem, &material.key_pem).unwrap();
        assert_eq!(ca.fingerprint(), again.fingerprint());
        assert_eq!(fingerprint_pem(&material.cert_pem).unwrap(), ca.fingerprint());
        let names = ["tether.local".into(), "10.0.0.5".into()];
        let server = ca.issue_server_cert(&names, NOW, SERVER_CERT_LIFETIME).unwrap();
        let (from, to) = cert_validity(&server.cert_pem).unwrap();
        assert!(from < NOW && to > NOW);
        assert_eq!(cert_names(&server.cert_pem).unwrap(), server_names(&names), "the names read back");
        assert!(issued_by(&server.cert_pem, ca.cert_pem()).unwrap());
        let (other, _) = Ca::create(NOW).unwrap();
        assert!(!issued_by(&server.cert_pem, other.cert_pem()).unwrap(), "CAs have names of their own");
    }
}
