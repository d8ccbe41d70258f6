//! The OpenID Connect relying party: discovery, the authorization request
//! (code flow with PKCE S256, state and nonce), the code exchange, and the
//! ID token's checks (signed by a key the provider publishes, issuer,
//! audience, expiry, nonce). Only what the appliance uses of the
//! specification; the single sign-on service ([`super::sso`]) decides what a
//! verified identity may do.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use data_encoding::BASE64URL_NOPAD;
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use tether_base::crypto::primitives::signature;

/// Single sign-on, validated.
#[derive(Debug, Clone)]
pub struct SsoSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    pub ca_file: PathBuf,
    /// Where the provider sends the browser back.
    pub redirect_uri: String,
    pub console_url: String,
    pub scopes: String,
    pub groups_claim: String,
    /// Group to role, first match wins.
    pub roles: Vec<(String, super::Role)>,
    /// `acr` values that mean the provider checked a second factor (asked
    /// for in the authorization request when set). An `amr` naming a
    /// second factor counts either way (see [`super::sso::mfa_assured`]).
    pub mfa_acr_values: Vec<String>,
}

/// The path the provider redirects to after login.
pub const CALLBACK_PATH: &str = "/api/v1/auth/sso/callback";

/// The provider's signing keys are fetched again for an unknown key id at
/// most this often (a key rotation), so forged key ids cannot make the
/// appliance hammer the provider.
const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(30);
/// Clock difference tolerated between the appliance and the provider.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
const SKEW_SECS: i64 = CLOCK_SKEW.as_secs() as i64;
/// A provider answer larger than this is refused.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Why single sign-on could not go on. Messages never carry a secret.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached (reqwest keeps the reason in its
    /// sources, so the message walks them).
    #[error("the identity provider is unavailable: {}", tether_base::tls::error_chain(.0))]
    Unreachable(#[source] reqwest::Error),
    /// The provider answered with a server error.
    #[error("the identity provider is unavailable: it answered {0}")]
    Unavailable(reqwest::StatusCode),
    /// The provider answered, but not as the protocol requires, or the
    /// sign-in's evidence did not hold up.
    #[error("{0}")]
    Refused(String),
}

fn refused(message: impl Into<String>) -> OidcError {
    OidcError::Refused(message.into())
}

/// What discovery tells about the provider.
#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    userinfo_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
}

/// One published public key (RFC 7517), RSA or P-256 EC.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// What a verified ID token says, and the claims for group lookups.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    /// When the person last authenticated at the provider (seconds since
    /// the epoch).
    pub auth_time: Option<i64>,
    pub claims: Value,
}

/// What the ID token must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Now, in seconds since the epoch.
    pub now: i64,
}

/// The provider as the appliance uses it.
#[derive(Debug)]
pub struct Provider {
    issuer: String,
    client_id: String,
    client_secret: Zeroizing<String>,
    redirect_uri: String,
    scopes: String,
    /// Asked for as `acr_values` (voluntary: the answer's `acr` is checked).
    acr_values: String,
    http: reqwest::Client,
    metadata: Mutex<Option<Arc<Metadata>>>,
    keys: Mutex<Option<(Arc<Vec<Jwk>>, Instant)>>,
}

impl Provider {
    /// Reads the client secret and the CA file; contacts nobody yet (the
    /// provider may be down while the appliance starts).
    pub fn new(settings: &SsoSettings) -> anyhow::Result<Provider> {
        let secret = tether_base::files::read_secret(&settings.client_secret_file)
            .map_err(|e| anyhow::anyhow!("sso.client_secret_file: {e:#}"))?;
        if secret.is_empty() {
            anyhow::bail!("sso.client_secret_file: the file is empty");
        }
        let ca = std::fs::read_to_string(&settings.ca_file)
            .map_err(|e| anyhow::anyhow!("sso.ca_file {}: {e}", settings.ca_file.display()))?;
        let tls = tether_base::tls::client(&ca, None, tether_base::tls::CLIENT_HTTP_ALPN)
            .map_err(|e| anyhow::anyhow!("sso.ca_file {}: {e}", settings.ca_file.display()))?;
        let http = tether_base::tls::https_client(tls, Duration::from_secs(15))?;
        Ok(Provider {
            issuer: settings.issuer.clone(),
            client_id: settings.client_id.clone(),
            client_secret: secret,
            redirect_uri: settings.redirect_uri.clone(),
            scopes: settings.scopes.clone(),
            acr_values: settings.mfa_acr_values.join(" "),
            http,
            metadata: Mutex::new(None),
            keys: Mutex::new(None),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Discovery, fetched once and kept (a failure is not kept: the next
    /// sign-in tries again).
    async fn metadata(&self) -> Result<Arc<Metadata>, OidcError> {
        if let Some(m) = lock(&self.metadata).clone() {
            return Ok(m);
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let metadata: Metadata = self.fetch_json(self.http.get(&url)).await?;
        // OpenID Connect Discovery 1.0 §4.3: the document must name the
        // issuer it was fetched for, or tokens could be accepted from another.
        if metadata.issuer != self.issuer {
            return Err(refused(format!(
                "the provider calls itself {:?}, not the configured issuer {:?}",
                metadata.issuer, self.issuer
            )));
        }
        for endpoint in [&metadata.authorization_endpoint, &metadata.token_endpoint, &metadata.jwks_uri] {
            if !endpoint.starts_with("https://") {
                return Err(refused(format!("the provider's endpoint {endpoint:?} is not https")));
            }
        }
        let metadata = Arc::new(metadata);
        *lock(&self.metadata) = Some(metadata.clone());
        Ok(metadata)
    }

    /// The URL to send the browser to. `fresh`: the provider must ask the
    /// person to authenticate again, whatever session it holds.
    pub async fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        code_verifier: &str,
        fresh: bool,
        max_age: Duration,
    ) -> Result<String, OidcError> {
        let metadata = self.metadata().await?;
        let mut url = reqwest::Url::parse(&metadata.authorization_endpoint)
            .map_err(|_| refused("the provider's authorization endpoint is not a URL"))?;
        let challenge = BASE64URL_NOPAD.encode(&tether_base::secret::sha256(code_verifier.as_bytes()));
        // max_age makes auth_time a required claim (Core §3.1.2.1): the
        // appliance needs it to know how fresh the authentication is.
        let max_age = if fresh { 0 } else { max_age.as_secs() };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("scope", &self.scopes)
                .append_pair("state", state)
                .append_pair("nonce", nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("max_age", &max_age.to_string());
            if fresh {
                q.append_pair("prompt", "login");
            }
            if !self.acr_values.is_empty() {
                q.append_pair("acr_values", &self.acr_values);
            }
        }
        Ok(url.into())
    }

    /// Trades the code for tokens and verifies the ID token. Returns the
    /// identity and the access token (for the userinfo endpoint).
    pub async fn redeem(
        &self,
        code: &str,
        code_verifier: &str,
        nonce: &str,
        now: i64,
    ) -> Result<(Identity, Option<Zeroizing<String>>), OidcError> {
        let metadata = self.metadata().await?;
        let body = form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", code_verifier),
        ]);
        // client_secret_basic (RFC 6749 §2.3.1): both parts form-encoded first.
        let credentials = Zeroizing::new(format!(
            "{}:{}",
            form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(self.client_secret.as_bytes()).collect::<String>()
        ));
        let authorization = Zeroizing::new(format!("Basic {}", data_encoding::BASE64.encode(credentials.as_bytes())));
        let request = self
            .http
            .post(&metadata.token_endpoint)
            .header("authorization", authorization.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        let answer: TokenAnswer = self.fetch_json(request).await?;
        let id_token = answer.id_token.ok_or_else(|| refused("the provider returned no ID token"))?;
        let expected = Expected { issuer: &self.issuer, client_id: &self.client_id, nonce, now };
        let identity = match verify_id_token(&id_token, &self.signing_keys(false).await?, &expected) {
            Err(TokenRefusal::UnknownKey) => {
                verify_id_token(&id_token, &self.signing_keys(true).await?, &expected).map_err(TokenRefusal::into_error)
            }
            other => other.map_err(TokenRefusal::into_error),
        }?;
        Ok((identity, answer.access_token.map(Zeroizing::new)))
    }

    /// The userinfo claims for `subject` (Core §5.3.2: the answer must be
    /// about the same subject as the ID token).
    pub async fn userinfo(&self, access_token: &str, subject: &str) -> Result<Option<Value>, OidcError> {
        let metadata = self.metadata().await?;
        let Some(endpoint) = &metadata.userinfo_endpoint else { return Ok(None) };
        let claims: Value = self.fetch_json(self.http.get(endpoint).bearer_auth(access_token)).await?;
        if claims.get("sub").and_then(Value::as_str) != Some(subject) {
            return Err(refused("the provider's userinfo is about another subject"));
        }
        Ok(Some(claims))
    }

    /// Where to send the browser to end the provider's session too, if the
    /// provider supports RP-initiated logout.
    pub async fn logout_url(&self, post_logout_redirect_uri: &str) -> Option<String> {
        let metadata = self.metadata().await.ok()?;
        let mut url = reqwest::Url::parse(metadata.end_session_endpoint.as_deref()?).ok()?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        Some(url.into())
    }

    async fn signing_keys(&self, refetch: bool) -> Result<Arc<Vec<Jwk>>, OidcError> {
        if let Some((keys, fetched)) = lock(&self.keys).clone()
            && (!refetch || fetched.elapsed() < JWKS_REFETCH_AFTER)
        {
            return Ok(keys);
        }
        let metadata = self.metadata().await?;
        let set: JwkSet = self.fetch_json(self.http.get(&metadata.jwks_uri)).await?;
        let keys = Arc::new(set.keys);
        *lock(&self.keys) = Some((keys.clone(), Instant::now()));
        Ok(keys)
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, OidcError> {
        let response = request.send().await.map_err(OidcError::Unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(OidcError::Unreachable)?;
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(refused("the provider's answer is too large"));
        }
        if status.is_client_error() {
            // OAuth errors name themselves in `error`; nothing else is echoed.
            let code = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(printable))
                .unwrap_or_else(|| status.to_string());
            return Err(refused(format!("the provider refused: {code}")));
        }
        if !status.is_success() {
            return Err(OidcError::Unavailable(status));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| refused(format!("the provider's answer is not what OpenID Connect specifies: {e}")))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `application/x-www-form-urlencoded`.
fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// Text from the provider, cut short and limited to printable ASCII before
/// it goes into an error.
fn printable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(80).collect()
}

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Signed with a key id the provider does not publish (yet).
    UnknownKey,
    Invalid(&'static str),
}

impl TokenRefusal {
    fn into_error(self) -> OidcError {
        match self {
            TokenRefusal::UnknownKey => refused("the ID token is signed with a key the provider does not publish"),
            TokenRefusal::Invalid(why) => refused(format!("the ID token is not valid: {why}")),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// Checks a compact JWS ID token: the signature with one of `keys`
/// (RS256 or ES256 only, never `none`), then issuer, audience, authorized
/// party, expiry, issue time and nonce (Core §3.1.3.7).
pub fn verify_id_token(jwt: &str, keys: &[Jwk], expected: &Expected<'_>) -> Result<Identity, TokenRefusal> {
    use TokenRefusal::Invalid;
    let mut parts = jwt.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid("not a signed JWT"));
    };
    let decode = |s: &str| BASE64URL_NOPAD.decode(s.as_bytes()).map_err(|_| Invalid("not base64url"));
    let header: Header = serde_json::from_slice(&decode(header_b64)?).map_err(|_| Invalid("bad header"))?;
    let sig = decode(signature_b64)?;
    let signed = &jwt.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    let kty = match header.alg.as_str() {
        "RS256" => "RSA",
        "ES256" => "EC",
        _ => return Err(Invalid("the signature algorithm is not RS256 or ES256")),
    };
    let candidates: Vec<&Jwk> = keys
        .iter()
        .filter(|k| k.kty == kty && k.usage.as_deref().is_none_or(|u| u == "sig"))
        .filter(|k| header.kid.is_none() || k.kid == header.kid)
        .collect();
    if candidates.is_empty() {
        return Err(TokenRefusal::UnknownKey);
    }
    if !candidates.iter().any(|k| verifies(k, &header.alg, signed, &sig)) {
        return Err(Invalid("the signature does not verify"));
    }
    let claims: Value = serde_json::from_slice(&decode(payload_b64)?).map_err(|_| Invalid("bad claims"))?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    if text("iss") != Some(expected.issuer) {
        return Err(Invalid("issued by another issuer"));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !audiences.contains(&expected.client_id) {
        return Err(Invalid("issued for another client"));
    }
    if audiences.len() > 1 && text("azp") != Some(expected.client_id) {
        return Err(Invalid("issued for several clients, not authorized for this one"));
    }
    let exp = number("exp").ok_or(Invalid("no expiry"))?;
    if exp + SKEW_SECS <= expected.now {
        return Err(Invalid("expired"));
    }
    if number("iat").is_none_or(|iat| iat > expected.now + SKEW_SECS) {
        return Err(Invalid("no issue time, or issued in the future"));
    }
    if text("nonce") != Some(expected.nonce) {
        return Err(Invalid("the nonce does not match this sign-in"));
    }
    let subject = text("sub").filter(|s| !s.is_empty()).ok_or(Invalid("no subject"))?.to_owned();
    Ok(Identity { subject, auth_time: number("auth_time"), claims })
}

fn verifies(key: &Jwk, alg: &str, signed: &[u8], sig: &[u8]) -> bool {
    let field = |v: &Option<String>| v.as_deref().and_then(|s| BASE64URL_NOPAD.decode(s.as_bytes()).ok());
    match alg {
        "RS256" => {
            let (Some(n), Some(e)) = (field(&key.n), field(&key.e)) else { return false };
            signature::RsaPublicKeyComponents { n: &n, e: &e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, sig)
                .is_ok()
        }
        "ES256" => {
            let (Some(x), Some(y)) = (field(&key.x), field(&key.y)) else { return false };
            if key.crv.as_deref() != Some("P-256") || x.len() != 32 || y.len() != 32 {
                return false;
            }
            let point: Vec<u8> = [&[0x04][..], &x, &y].concat();
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(signed, sig).is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tether_base::crypto::primitives::{self, rand::SystemRandom, signature::KeyPair};

    const NOW: i64 = 1_800_000_000;

    struct Signer {
        pair: signature::EcdsaKeyPair,
        jwk: Jwk,
    }

    fn signer(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = primitives::ecdsa_key_pair(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwk = serde_json::from_value(json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": BASE64URL_NOPAD.encode(&point[1..33]), "y": BASE64URL_NOPAD.encode(&point[33..]),
        }))
        .unwrap();
        Signer { pair, jwk }
    }

    fn sign(s: &Signer, header: Value, claims: Value) -> String {
        let head = format!(
            "{}.{}",
            BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
            BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
        );
        let sig = s.pair.sign(&SystemRandom::new(), head.as_bytes()).unwrap();
        format!("{head}.{}", BASE64URL_NOPAD.encode(sig.as_ref()))
    }

    fn claims() -> Value {
        json!({"iss": "https://idp", "aud": "tether", "sub": "u1", "exp": NOW + 300, "iat": NOW,
               "nonce": "n1", "auth_time": NOW - 5, "preferred_username": "alice"})
    }

    const EXPECTED: Expected<'static> = Expected { issuer: "https://idp", client_id: "tether", nonce: "n1", now: NOW };

    fn check(s: &Signer, claims: Value) -> Result<Identity, TokenRefusal> {
        verify_id_token(&sign(s, json!({"alg": "ES256", "kid": "k1"}), claims), std::slice::from_ref(&s.jwk), &EXPECTED)
    }

    #[test]
    fn a_token_signed_by_a_published_key_for_this_sign_in_is_accepted() {
        let s = signer("k1");
        let id = check(&s, claims()).unwrap();
        assert_eq!((id.subject.as_str(), id.auth_time), ("u1", Some(NOW - 5)));
        assert_eq!(id.claims["preferred_username"], "alice");
    }

    #[test]
    fn every_claim_the_specification_requires_is_checked() {
        let s = signer("k1");
        let with = |k: &str, v: Value| {
            let mut c = claims();
            c[k] = v;
            check(&s, c).map(|_| ()).unwrap_err()
        };
        assert_eq!(with("iss", json!("https://other")), TokenRefusal::Invalid("issued by another issuer"));
        assert_eq!(with("aud", json!("other")), TokenRefusal::Invalid("issued for another client"));
        assert!(matches!(with("aud", json!(["tether", "other"])), TokenRefusal::Invalid(m) if m.contains("several")));
        assert_eq!(with("exp", json!(NOW - SKEW_SECS)), TokenRefusal::Invalid("expired"));
        assert!(matches!(with("iat", json!(NOW + 3600)), TokenRefusal::Invalid(m) if m.contains("future")));
        assert!(matches!(with("nonce", json!("n2")), TokenRefusal::Invalid(m) if m.contains("nonce")));
        assert_eq!(with("sub", json!("")), TokenRefusal::Invalid("no subject"));
        let mut several = claims();
        several["aud"] = json!(["tether", "other"]);
        several["azp"] = json!("tether");
        assert!(check(&s, several).is_ok(), "several audiences with azp = this client");
    }

    #[test]
    fn forged_altered_or_unsigned_tokens_are_refused() {
        let s = signer("k1");
        let good = sign(&s, json!({"alg": "ES256", "kid": "k1"}), claims());
        let keys = [s.jwk.clone()];
        // The payload swapped for another person's, signature kept.
        let mut forged = claims();
        forged["sub"] = json!("admin");
        let parts: Vec<&str> = good.split('.').collect();
        let swapped = format!("{}.{}.{}", parts[0], BASE64URL_NOPAD.encode(forged.to_string().as_bytes()), parts[2]);
        assert_eq!(
            verify_id_token(&swapped, &keys, &EXPECTED).unwrap_err(),
            TokenRefusal::Invalid("the signature does not verify")
        );
        // Signed by a key the provider does not publish under that id.
        let stranger = signer("k1");
        assert!(
            verify_id_token(&sign(&stranger, json!({"alg": "ES256", "kid": "k1"}), claims()), &keys, &EXPECTED)
                .is_err()
        );
        assert_eq!(
            verify_id_token(&sign(&s, json!({"alg": "ES256", "kid": "k9"}), claims()), &keys, &EXPECTED).unwrap_err(),
            TokenRefusal::UnknownKey
        );
        // "none" and HMAC algorithms are never accepted.
        for alg in ["none", "HS256"] {
            let unsigned =
                format!("{}.{}.", BASE64URL_NOPAD.encode(json!({"alg": alg}).to_string().as_bytes()), parts[1]);
            assert!(
                matches!(verify_id_token(&unsigned, &keys, &EXPECTED), Err(TokenRefusal::Invalid(m)) if m.contains("algorithm"))
            );
        }
        assert!(verify_id_token("a.b", &keys, &EXPECTED).is_err());
    }
}
