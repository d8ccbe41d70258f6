//! PEM, the armour keys, certificates and CRLs travel in as text:
//! base64 of the DER between `-----BEGIN label-----` and `-----END label-----`.

use base64::Engine;

/// `der` armoured under `label`, in 64-character lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The DER of the first block labelled `label`, if there is one and it decodes.
pub fn decode(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != begin)
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_is_encoded_decodes_and_other_labels_do_not() {
        let der: Vec<u8> = (0..=255).collect();
        let pem = super::encode("PUBLIC KEY", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(super::decode(&pem, "PUBLIC KEY"), Some(der));
        assert_eq!(super::decode(&pem, "PRIVATE KEY"), None);
        assert_eq!(super::decode("-----BEGIN PUBLIC KEY-----\n@@@\n-----END PUBLIC KEY-----\n", "PUBLIC KEY"), None);
    }
}
