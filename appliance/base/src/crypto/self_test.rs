//! Known-answer self-tests of the algorithms the appliance relies on, run at
//! every start in FIPS mode before any key is used (FIPS 140-3 asks a
//! module to test itself before it serves). Each test checks the library
//! against a published vector; the signature test signs with a fresh key and
//! verifies (a pairwise consistency test), since ECDSA signing is randomised.

use super::primitives::rand::{SecureRandom, SystemRandom};
use super::primitives::{aead, digest, hmac, pbkdf2, signature};

/// A self-test that did not give the published answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {0} self-test failed: the cryptographic library is not behaving as specified")]
pub struct SelfTestFailed(pub &'static str);

/// What passed, in order.
pub const TESTS: [&str; 6] =
    ["SHA-256", "HMAC-SHA256", "AES-256-GCM", "PBKDF2-HMAC-SHA256", "ECDSA P-256 sign/verify", "random generator"];

/// Runs every self-test; the first failure stops it.
pub fn run() -> Result<(), SelfTestFailed> {
    check(TESTS[0], sha256())?;
    check(TESTS[1], hmac_sha256())?;
    check(TESTS[2], aes_256_gcm())?;
    check(TESTS[3], pbkdf2_sha256())?;
    check(TESTS[4], ecdsa_p256())?;
    check(TESTS[5], random())?;
    Ok(())
}

fn check(name: &'static str, passed: bool) -> Result<(), SelfTestFailed> {
    if passed { Ok(()) } else { Err(SelfTestFailed(name)) }
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_default()
}

/// FIPS 180-4 example: SHA-256("abc").
fn sha256() -> bool {
    let want = unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    digest::digest(&digest::SHA256, b"abc").as_ref() == want
}

/// RFC 4231, test case 2.
fn hmac_sha256() -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
    let want = unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    hmac::sign(&key, b"what do ya want for nothing?").as_ref() == want
}

/// The GCM specification (McGrew and Viega), test case 16: AES-256 with
/// associated data. Sealing must give the published ciphertext and tag, and
/// opening must give the plaintext back.
fn aes_256_gcm() -> bool {
    let key = unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    let plaintext = unhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let want = unhex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662\
         76fc6ece0f4e1768cddf8853bb2d551b",
    );
    let nonce = || aead::Nonce::try_assume_unique_for_key(&unhex("cafebabefacedbaddecaf888"));
    let Ok(unbound) = aead::UnboundKey::new(&aead::AES_256_GCM, &key) else { return false };
    let key = aead::LessSafeKey::new(unbound);
    let mut sealed = plaintext.clone();
    let Ok(n) = nonce() else { return false };
    if key.seal_in_place_append_tag(n, aead::Aad::from(&aad), &mut sealed).is_err() || sealed != want {
        return false;
    }
    let Ok(n) = nonce() else { return false };
    matches!(key.open_in_place(n, aead::Aad::from(&aad), &mut sealed), Ok(opened) if *opened == plaintext[..])
}

/// The widely published PBKDF2-HMAC-SHA256 vector ("password", "salt", 1
/// iteration, 32 bytes), checked against Python's hashlib.
fn pbkdf2_sha256() -> bool {
    let want = unhex("120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b");
    let mut out = [0u8; 32];
    let Some(one) = std::num::NonZeroU32::new(1) else { return false };
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, one, b"salt", b"password", &mut out);
    out[..] == want[..] && pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, one, b"salt", b"password", &want).is_ok()
}

/// Pairwise consistency: a fresh P-256 key signs, its public key verifies,
/// and a changed message does not verify.
fn ecdsa_p256() -> bool {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let Ok(pkcs8) = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng) else { return false };
    let Ok(pair) = super::primitives::ecdsa_key_pair(alg, pkcs8.as_ref()) else { return false };
    let Ok(sig) = pair.sign(&rng, b"tether self-test") else { return false };
    use signature::KeyPair as _;
    let public = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, pair.public_key().as_ref());
    public.verify(b"tether self-test", sig.as_ref()).is_ok()
        && public.verify(b"tether self-tesT", sig.as_ref()).is_err()
}

/// The generator answers, and two draws differ (a stuck generator is the
/// failure this can catch).
fn random() -> bool {
    let rng = SystemRandom::new();
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    rng.fill(&mut a).is_ok() && rng.fill(&mut b).is_ok() && a != b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_self_test_passes_on_this_build() {
        assert_eq!(run(), Ok(()));
    }

    #[test]
    fn a_wrong_answer_names_the_test_that_failed() {
        assert_eq!(
            check("AES-256-GCM", false).unwrap_err().to_string(),
            "the AES-256-GCM self-test failed: the cryptographic library is not behaving as specified"
        );
    }
}
