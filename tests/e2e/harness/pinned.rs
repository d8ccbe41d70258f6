//! A client for setup mode, which presents a self-signed certificate: it
//! trusts exactly the certificate whose fingerprint the machine's screen
//! showed, as the operator does when the browser warns.

use std::time::Duration;

use super::Api;
use tether_base::tls;

/// The setup API at `base`, trusting only the certificate `fingerprint`
/// (`sha256:…`) names.
pub fn setup_api(base: &str, fingerprint: &str) -> Api {
    let config = tls::trusting(tls::Trust::Certificate(fingerprint), None, tls::CLIENT_HTTP_ALPN).unwrap();
    Api::from_client(tls::https_client(config, Duration::from_secs(90)).unwrap(), base)
}
