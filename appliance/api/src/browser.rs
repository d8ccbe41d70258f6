//! What browsers are told, in one place: the security headers every
//! response of every listener carries, the CORS policy (shut unless the
//! site lists exact origins), and the endpoint that counts Content Security
//! Policy violations.
//!
//! Rules: a handler never sets these headers itself ([`headers`] overwrites
//! them); `Cache-Control` is `no-store` unless a response is a
//! content-hashed static file that says `immutable`; no CORS answer ever
//! carries `Access-Control-Allow-Credentials`, so a session cookie never
//! works across origins; a violation report is counted, never parsed for
//! anything else or trusted.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// Where browsers send Content Security Policy violation reports.
pub const CSP_REPORT_PATH: &str = "/api/v1/security/csp-reports";

/// Adds where violations are reported to a policy: `report-uri` for
/// browsers without the Reporting API, `report-to` for the rest.
macro_rules! reported {
    ($policy:literal) => {
        concat!($policy, "; report-uri /api/v1/security/csp-reports; report-to csp")
    };
}

/// The policy of everything that is not a console document: nothing may
/// load, nothing may frame it.
pub const API_CSP: &str = reported!("default-src 'none'; frame-ancestors 'none'");

/// The policy of the console's documents: its own scripts and styles only
/// (never inline, never `eval`), DOM sinks only through the `tether`
/// Trusted Types policy.
pub const CONSOLE_CSP: &str = reported!(
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
     require-trusted-types-for 'script'; trusted-types tether"
);

/// The headers every response carries, whatever produced it.
const FIXED: [(&str, &str); 8] = [
    ("strict-transport-security", "max-age=63072000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("x-frame-options", "DENY"),
    (
        "permissions-policy",
        "accelerometer=(), ambient-light-sensor=(), autoplay=(), battery=(), bluetooth=(), camera=(), \
         display-capture=(), fullscreen=(), geolocation=(), gyroscope=(), hid=(), idle-detection=(), \
         magnetometer=(), microphone=(), midi=(), payment=(), publickey-credentials-get=(), \
         screen-wake-lock=(), serial=(), usb=(), xr-spatial-tracking=()",
    ),
    ("reporting-endpoints", "csp=\"/api/v1/security/csp-reports\""),
];

/// Middleware on every router: sets the security headers on the way out.
pub async fn headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    apply(response.headers_mut());
    response
}

fn apply(headers: &mut HeaderMap) {
    for (name, value) in FIXED {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let document = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let csp = if document { CONSOLE_CSP } else { API_CSP };
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    let immutable =
        headers.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("immutable"));
    if !immutable {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// The request headers a listed origin's scripts may send.
const ALLOWED_REQUEST_HEADERS: &str = "authorization, content-type, idempotency-key";
const ALLOWED_METHODS: &str = "GET, POST, PUT, DELETE";
/// How long a browser may remember a granted preflight.
const PREFLIGHT_MAX_AGE: &str = "600";

/// Middleware on every router: the CORS policy.
///
/// A request with no `Origin`, or from the appliance's own origin, passes
/// untouched. From any other origin: a preflight is answered here (204 with
/// the grant if the origin is listed in `cors_allowed_origins`, else 403
/// problem+json); a state-changing request from an unlisted origin is
/// refused (a cross-site form post never reaches a handler); a read gets no
/// grant, so the browser keeps the answer from the page. A request that
/// carries a cookie gets no grant from any origin.
pub async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(origin) = cross_origin(req.headers(), req.uri()) else { return next.run(req).await };
    let listed = state.config.cors_allowed_origins.contains(&origin);
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !listed {
            return ApiError::CrossOriginRefused.into_response();
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        grant(h, &origin);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOWED_METHODS));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_REQUEST_HEADERS));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE));
        return response;
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if !listed && !safe {
        return ApiError::CrossOriginRefused.into_response();
    }
    let credentialed = req.headers().contains_key(header::COOKIE);
    let mut response = next.run(req).await;
    if listed && !credentialed {
        grant(response.headers_mut(), &origin);
    }
    response.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
    response
}

fn grant(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
}

/// The request's `Origin` if it is not the appliance's own (the origin the
/// browser addressed: `https://` and the `Host` or `:authority`).
fn cross_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("null").trim().to_ascii_lowercase();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .map(str::to_ascii_lowercase);
    match host {
        Some(host) if origin == format!("https://{host}") => None,
        _ => Some(origin),
    }
}

/// Content Security Policy violations reported since start.
#[derive(Debug, Default)]
pub struct CspReports(AtomicU64);

impl CspReports {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// `POST /api/v1/security/csp-reports`: counts a violation report. The
/// body is whatever a browser (or anyone) sent; it is read only to bound
/// it, and the log names no part of it.
pub async fn csp_report(State(state): State<AppState>, body: axum::body::Bytes) -> StatusCode {
    let total = state.csp_reports.0.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(total, bytes = body.len(), "a browser reported a Content Security Policy violation");
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policies_report_here_and_never_allow_inline_or_eval() {
        assert!(API_CSP.starts_with("default-src 'none'; frame-ancestors 'none'; report-uri"), "{API_CSP}");
        for policy in [API_CSP, CONSOLE_CSP] {
            assert!(!policy.contains("unsafe-"), "{policy}");
            assert!(policy.contains(&format!("report-uri {CSP_REPORT_PATH};")), "{policy}");
        }
        let reporting = FIXED.iter().find(|(name, _)| *name == "reporting-endpoints").unwrap();
        assert_eq!(reporting.1, format!("csp=\"{CSP_REPORT_PATH}\""));
    }

    #[test]
    fn documents_get_the_console_policy_and_everything_else_the_api_policy() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        apply(&mut h);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONSOLE_CSP);
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        apply(&mut h);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], API_CSP);
        assert_eq!(h[header::CACHE_CONTROL], "no-store", "a stream's no-cache becomes no-store");
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
        apply(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    }

    #[test]
    fn the_own_origin_is_not_cross_origin() {
        let uri: axum::http::Uri = "/api/v1/tasks".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("tether.site.lan:8443"));
        assert_eq!(cross_origin(&h, &uri), None, "no Origin");
        h.insert(header::ORIGIN, HeaderValue::from_static("https://Tether.site.lan:8443"));
        assert_eq!(cross_origin(&h, &uri), None);
        h.insert(header::ORIGIN, HeaderValue::from_static("http://tether.site.lan:8443"));
        assert_eq!(
            cross_origin(&h, &uri).as_deref(),
            Some("http://tether.site.lan:8443"),
            "plain http is another origin"
        );
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert_eq!(cross_origin(&h, &uri).as_deref(), Some("null"));
    }
}
