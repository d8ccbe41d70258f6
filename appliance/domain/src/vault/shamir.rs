//! k-of-n Shamir secret sharing over GF(2^8), and the text form officers
//! keep on paper.
//!
//! Each byte of the secret is the constant term of its own random
//! polynomial of degree k − 1; share `x` holds every polynomial's value at
//! `x`. Any k shares interpolate the constant terms back; k − 1 say nothing
//! about them. Field arithmetic runs without secret-dependent branches or
//! table lookups.
//!
//! A share's text carries the share set's id (so a share of another
//! appliance, or of a set replaced by `rekey`, is named as such), the
//! threshold, its index and a checksum (so a mistyped share is named, not
//! silently combined into a wrong key):
//! `tether-share-<set>-<k>-<index>-<value hex>-<check>`.

use tether_base::crypto::primitives::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use tether_base::secret::{RandomFailed, sha256_fields};

const PREFIX: &str = "tether-share";
/// Identifies one share set: made at init or rekey, recorded in the vault.
pub type SetId = [u8; 4];
/// A share as numbers: its index (x) and one value per secret byte (y).
pub type Point = (u8, Zeroizing<Vec<u8>>);

/// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1, constant time.
fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    for _ in 0..8 {
        product ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    product
}

/// The multiplicative inverse, as a^254 (and 0 for 0, which never occurs:
/// share indexes are distinct and non-zero).
fn inverse(a: u8) -> u8 {
    let mut result = 1u8;
    let mut base = a;
    let mut exp = 254u8;
    while exp > 0 {
        if exp & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        exp >>= 1;
    }
    result
}

/// Splits `secret` into `count` shares (indexes 1..=count), any `threshold`
/// of which rebuild it. Requires 1 ≤ threshold ≤ count ≤ 255.
pub fn split(secret: &[u8], threshold: u8, count: u8) -> Result<Vec<Point>, RandomFailed> {
    debug_assert!(threshold >= 1 && threshold <= count);
    let mut coefficients = Zeroizing::new(vec![0u8; usize::from(threshold)]);
    let mut shares: Vec<Point> = (1..=count).map(|x| (x, Zeroizing::new(Vec::with_capacity(secret.len())))).collect();
    let rng = SystemRandom::new();
    for &byte in secret {
        coefficients[0] = byte;
        rng.fill(&mut coefficients[1..]).map_err(|_| RandomFailed)?;
        for (x, share) in &mut shares {
            // Horner's rule from the highest coefficient down.
            let y = coefficients.iter().rev().fold(0u8, |acc, &c| mul(acc, *x) ^ c);
            share.push(y);
        }
    }
    coefficients.zeroize();
    Ok(shares)
}

/// Interpolates the secret from shares with distinct non-zero indexes.
/// With fewer than the threshold it returns unrelated bytes, which the
/// caller's authenticated unwrap then refuses.
pub fn combine(shares: &[(u8, &[u8])]) -> Zeroizing<Vec<u8>> {
    let len = shares.first().map_or(0, |(_, y)| y.len());
    let mut secret = Zeroizing::new(vec![0u8; len]);
    for (i, (xi, yi)) in shares.iter().enumerate() {
        // The Lagrange basis polynomial for share i, evaluated at 0.
        let mut basis = 1u8;
        for (j, (xj, _)) in shares.iter().enumerate() {
            if i != j {
                basis = mul(basis, mul(*xj, inverse(xj ^ xi)));
            }
        }
        for (s, y) in secret.iter_mut().zip(yi.iter()) {
            *s ^= mul(*y, basis);
        }
    }
    secret
}

/// One officer's share, parsed and checked.
pub struct Share {
    pub set: SetId,
    pub threshold: u8,
    pub index: u8,
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share").field("index", &self.index).field("threshold", &self.threshold).finish_non_exhaustive()
    }
}

/// Why a share's text was refused. Never repeats the share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error("this is not a tether unseal share ({0})")]
    Malformed(&'static str),
    #[error("share {index} is mistyped: its checksum does not match; check every character")]
    Checksum { index: u8 },
}

fn checksum(set: &SetId, threshold: u8, index: u8, value: &[u8]) -> [u8; 4] {
    let digest = sha256_fields(&[PREFIX.as_bytes(), set, &[threshold], &[index], value]);
    [digest[0], digest[1], digest[2], digest[3]]
}

impl Share {
    /// The text an officer keeps.
    pub fn encode(&self) -> Zeroizing<String> {
        let check = checksum(&self.set, self.threshold, self.index, &self.value);
        Zeroizing::new(format!(
            "{PREFIX}-{}-{}-{}-{}-{}",
            hex::encode(self.set),
            self.threshold,
            self.index,
            Zeroizing::new(hex::encode(&self.value[..])).as_str(),
            hex::encode(check)
        ))
    }

    /// Parses a share's text (surrounding whitespace allowed).
    pub fn parse(text: &str) -> Result<Share, ShareError> {
        let rest = text.trim().strip_prefix(PREFIX).and_then(|r| r.strip_prefix('-'));
        let rest = rest.ok_or(ShareError::Malformed("it does not start with `tether-share-`"))?;
        let parts: Vec<&str> = rest.split('-').collect();
        let [set, threshold, index, value, check] = parts[..] else {
            return Err(ShareError::Malformed("it needs five parts after the prefix"));
        };
        let hex_field = |s: &str, len: usize, what: &'static str| {
            hex::decode(s).ok().filter(|b| b.len() == len).ok_or(ShareError::Malformed(what))
        };
        let set_bytes = hex_field(set, 4, "the share-set id is not 8 hex digits")?;
        let threshold: u8 = threshold.parse().map_err(|_| ShareError::Malformed("the threshold is not a number"))?;
        let index: u8 = index.parse().map_err(|_| ShareError::Malformed("the index is not a number"))?;
        if threshold == 0 || index == 0 {
            return Err(ShareError::Malformed("threshold and index start at 1"));
        }
        // A value that is not hex is a typo like any other: name the share.
        let value = Zeroizing::new(hex::decode(value).map_err(|_| ShareError::Checksum { index })?);
        let check = hex_field(check, 4, "the checksum is not 8 hex digits")?;
        let set: SetId = [set_bytes[0], set_bytes[1], set_bytes[2], set_bytes[3]];
        if checksum(&set, threshold, index, &value)[..] != check[..] {
            return Err(ShareError::Checksum { index });
        }
        Ok(Share { set, threshold, index, value })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn field_arithmetic_matches_known_values() {
        // From the AES specification: {57} x {83} = {c1}.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inverse(a)), 1, "{a}");
        }
    }

    fn share(index: u8, value: Vec<u8>) -> Share {
        Share { set: [1, 2, 3, 4], threshold: 2, index, value: Zeroizing::new(value) }
    }

    #[test]
    fn a_share_round_trips_and_a_typo_is_named() {
        let s = share(3, vec![0xab; 32]);
        let text = s.encode();
        let back = Share::parse(&format!("  {}\n", text.as_str())).unwrap();
        assert_eq!((back.set, back.threshold, back.index, &back.value[..]), (s.set, 2, 3, &s.value[..]));
        // Change one hex digit of the value: the checksum names the share.
        let mut typo = text.to_string();
        let at = typo.len() - 12;
        let c = if &typo[at..=at] == "a" { "b" } else { "a" };
        typo.replace_range(at..=at, c);
        assert_eq!(Share::parse(&typo).unwrap_err(), ShareError::Checksum { index: 3 });
        assert!(matches!(Share::parse("hello"), Err(ShareError::Malformed(_))));
        assert!(matches!(Share::parse("tether-share-zz-2-1-00-00000000"), Err(ShareError::Malformed(_))));
        // The refusal never repeats the share.
        assert!(!ShareError::Checksum { index: 3 }.to_string().contains(&hex::encode(&s.value[..])));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_k_of_n_shares_rebuild_the_secret_and_k_minus_1_never_do(
            secret in proptest::collection::vec(any::<u8>(), 32),
            (count, threshold) in (1u8..=10).prop_flat_map(|n| (Just(n), 1..=n)),
            order in any::<u64>(),
        ) {
            let shares = split(&secret, threshold, count).unwrap();
            // A random subset of exactly k shares, in random order.
            let mut picked: Vec<usize> = (0..usize::from(count)).collect();
            fastrand::Rng::with_seed(order).shuffle(&mut picked);
            let points = |n: usize| -> Vec<(u8, &[u8])> {
                picked[..n].iter().map(|&i| (shares[i].0, &shares[i].1[..])).collect()
            };
            let k = usize::from(threshold);
            prop_assert_eq!(&combine(&points(k))[..], &secret[..]);
            prop_assert_eq!(&combine(&points(usize::from(count)))[..], &secret[..]);
            if k > 1 {
                prop_assert_ne!(&combine(&points(k - 1))[..], &secret[..]);
            }
        }
    }
}
