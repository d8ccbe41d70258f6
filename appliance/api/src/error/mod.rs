//! Every error the HTTP API can answer, as RFC 7807 problem+json with a
//! stable `code`. One match lists every variant: adding one forces a
//! decision about its status and code. 5xx bodies carry the code only; the
//! detail goes to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

mod domain;

use tether_base::Cause;
use tether_domain::vault;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", unauthenticated_detail(*.0))]
    Unauthenticated(Option<tether_domain::auth::AuthError>),
    #[error("{}", forbidden_detail(*role, needed))]
    Forbidden { role: tether_domain::auth::Role, needed: Vec<tether_domain::auth::Role> },
    #[error("the name, password or code is wrong")]
    InvalidCredentials,
    #[error("this account needs its second factor: send a TOTP code or a recovery code")]
    SecondFactorRequired,
    #[error("too many failed attempts; wait before trying again")]
    Throttled(std::time::Duration),
    #[error("too many requests from this address; slow down")]
    RateLimited(std::time::Duration),
    #[error("a state-changing request from a console session needs the X-CSRF-Token header of that session")]
    CsrfTokenInvalid,
    #[error("requests from another origin are refused unless the site lists it in cors_allowed_origins")]
    CrossOriginRefused,
    #[error("the setup code is wrong; it is printed on the appliance's console and in its journal")]
    SetupCodeInvalid,
    #[error("the setup code has expired; restart the appliance (`systemctl restart tether`) for a new one")]
    SetupCodeExpired,
    #[error("the appliance is set up already")]
    SetupDone,
    #[error("{0}")]
    SetupRefused(String),
    #[error("this session is not waiting for a second factor")]
    SecondFactorNotPending,
    #[error("no TOTP is enrolled for this account: enroll one (POST /api/v1/auth/totp, then /totp/confirm)")]
    SecondFactorNotEnrolled,
    #[error("this backup was not taken by this appliance (its HMAC does not verify under this appliance's keys)")]
    BackupNotOurs,
    #[error("this action needs a recent login: re-authenticate (POST /api/v1/auth/reauth) and retry")]
    ReauthenticationRequired,
    #[error("finish setting up your account first: choose your own password and, for your role, a second factor")]
    AccountSetupRequired,
    #[error("this needs a console session (log in), not a bearer token")]
    SessionRequired,
    #[error("{0}")]
    ExceedsYourRights(String),
    #[error("{0}")]
    AccountRefused(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "the audit log cannot be written (the disk is full or failing), so the action was not taken; it resumes once the store can write"
    )]
    AuditDegraded,
    #[error("the disk is nearly full: state changes are refused until space is freed (the audit log keeps a reserve)")]
    InsufficientStorage,
    #[error("a client certificate from this appliance's CA is required")]
    CertificateRequired,
    #[error("not found")]
    NotFound,
    #[error(
        "no signed checkpoint is written yet: one follows every 1,000 records, or each audit_checkpoint_interval while there is news, as long as the appliance is unsealed"
    )]
    NoCheckpoint,
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the body is not valid JSON for this request: {0}")]
    InvalidJson(String),
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the body is larger than this appliance accepts")]
    PayloadTooLarge,
    #[error("the lease is not the task's current lease; the task was reassigned or has finished")]
    LeaseStale,
    #[error("the task has already finished")]
    TaskFinished,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    #[error("the enrollment token is not valid (unknown, already used, or expired)")]
    EnrollmentTokenInvalid,
    #[error("this worker's enrollment has been revoked; enroll it again")]
    WorkerRevoked,
    #[error(
        "this worker's certificate has expired; renew it (POST /worker/v1/renew) within the grace window, or enroll again"
    )]
    CertificateExpired,
    #[error(
        "this certificate has been superseded by a newer one for the same worker; only the newest may renew, so enroll again"
    )]
    CertificateSuperseded,
    #[error("the certificate signing request was refused: {0}")]
    CsrRefused(String),
    #[error("{0}")]
    SecretRefused(String),
    /// A key the requested crypto mode does not allow is still in use.
    #[error("{0}")]
    KeyNotApproved(String),
    /// A rotation step out of order, or raced by another.
    #[error("{0}")]
    RotationConflict(String),
    /// A rotation step that would drop or skip a CA something still needs.
    #[error("{0}")]
    CaInUse(String),
    #[error("the appliance is shutting down; retry shortly")]
    Draining,
    #[error("the request took too long")]
    Timeout,
    #[error("the appliance is sealed; unseal it first (`tether unseal`)")]
    Sealed,
    #[error("{0}")]
    UnsealRefused(String),
    #[error("{0}")]
    ShareInvalid(String),
    #[error("single sign-on is not configured on this appliance; log in with a local account")]
    SsoNotConfigured,
    #[error("single sign-on failed: {0}")]
    SsoFailed(String),
    #[error("none of your groups at the identity provider gives a role on this appliance; ask an admin")]
    SsoNoRole,
    #[error("{0}")]
    SsoProviderUnavailable(String),
    #[error("{0}")]
    ModelImportBusy(String),
    #[error("{0}")]
    FirmwareUpdateBusy(String),
    #[error(
        "this tether does not run from the firmware image, so it has no slots to update and its machine's network \
         and time are the host's own: update a host with `tether install --upgrade BUNDLE`"
    )]
    NotTheImage,
    #[error("{0}")]
    SiteInvalid(String),
    #[error("{0}")]
    ModelSigningKeyMissing(String),
    #[error("{0}")]
    BundleRefused(String),
    #[error("{0}")]
    ModelExists(String),
    #[error("{0}")]
    VllmDirNotConfigured(String),
    #[error("send the body's length (Content-Length) so that its space can be checked before it is received")]
    LengthRequired,
    #[error("{0}")]
    BundleTooLarge(String),
    /// A worker's report would take a task's event log past its bound.
    #[error("{0}")]
    TaskEventsFull(String),
    #[error("{0}")]
    ModelServerRefused(String),
    #[error("a stored value failed its integrity check: {0}")]
    Integrity(#[source] vault::Error),
    /// A failure of the appliance itself, not of the request: the cause is
    /// logged, the client sees the code only.
    #[error("internal error: {0}")]
    Internal(#[source] Cause),
}

impl ApiError {
    /// An internal failure caused by `cause`.
    pub fn internal(cause: impl Into<Cause>) -> ApiError {
        ApiError::Internal(cause.into())
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl ApiError {
    /// The status and the stable code clients may match on.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Unauthenticated(_) => (S::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden { .. } => (S::FORBIDDEN, "forbidden"),
            ApiError::InvalidCredentials => (S::UNAUTHORIZED, "invalid_credentials"),
            ApiError::SecondFactorRequired => (S::UNAUTHORIZED, "second_factor_required"),
            ApiError::Throttled(_) => (S::TOO_MANY_REQUESTS, "login_throttled"),
            ApiError::RateLimited(_) => (S::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::CsrfTokenInvalid => (S::FORBIDDEN, "csrf_token_invalid"),
            ApiError::CrossOriginRefused => (S::FORBIDDEN, "cross_origin_refused"),
            ApiError::SetupCodeInvalid => (S::UNAUTHORIZED, "setup_code_invalid"),
            ApiError::SetupCodeExpired => (S::GONE, "setup_code_expired"),
            ApiError::SetupDone => (S::CONFLICT, "setup_done"),
            ApiError::SetupRefused(_) => (S::UNPROCESSABLE_ENTITY, "setup_refused"),
            ApiError::SecondFactorNotPending => (S::CONFLICT, "second_factor_not_pending"),
            ApiError::SecondFactorNotEnrolled => (S::CONFLICT, "second_factor_not_enrolled"),
            ApiError::BackupNotOurs => (S::UNPROCESSABLE_ENTITY, "backup_not_ours"),
            ApiError::ReauthenticationRequired => (S::FORBIDDEN, "reauthentication_required"),
            ApiError::AccountSetupRequired => (S::FORBIDDEN, "account_setup_required"),
            ApiError::SessionRequired => (S::BAD_REQUEST, "session_required"),
            ApiError::ExceedsYourRights(_) => (S::FORBIDDEN, "exceeds_your_rights"),
            ApiError::AccountRefused(_) => (S::UNPROCESSABLE_ENTITY, "account_refused"),
            ApiError::Conflict(_) => (S::CONFLICT, "conflict"),
            ApiError::AuditDegraded => (S::SERVICE_UNAVAILABLE, "audit_degraded"),
            ApiError::InsufficientStorage => (S::INSUFFICIENT_STORAGE, "insufficient_storage"),
            ApiError::CertificateRequired => (S::UNAUTHORIZED, "certificate_required"),
            ApiError::NotFound => (S::NOT_FOUND, "not_found"),
            ApiError::NoCheckpoint => (S::NOT_FOUND, "no_checkpoint"),
            ApiError::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::InvalidRequest(_) => (S::BAD_REQUEST, "invalid_request"),
            ApiError::InvalidJson(_) => (S::BAD_REQUEST, "invalid_json"),
            ApiError::UnsupportedMediaType => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::LeaseStale => (S::CONFLICT, "lease_stale"),
            ApiError::TaskFinished => (S::CONFLICT, "task_finished"),
            ApiError::IdempotencyConflict => (S::UNPROCESSABLE_ENTITY, "idempotency_conflict"),
            ApiError::EnrollmentTokenInvalid => (S::UNAUTHORIZED, "enrollment_token_invalid"),
            ApiError::WorkerRevoked => (S::FORBIDDEN, "worker_revoked"),
            ApiError::CertificateExpired => (S::UNAUTHORIZED, "certificate_expired"),
            ApiError::CertificateSuperseded => (S::FORBIDDEN, "certificate_superseded"),
            ApiError::CsrRefused(_) => (S::BAD_REQUEST, "csr_refused"),
            ApiError::SecretRefused(_) => (S::UNPROCESSABLE_ENTITY, "secret_refused"),
            ApiError::RotationConflict(_) => (S::CONFLICT, "rotation_conflict"),
            ApiError::KeyNotApproved(_) => (S::CONFLICT, "key_not_approved"),
            ApiError::CaInUse(_) => (S::CONFLICT, "ca_in_use"),
            ApiError::Draining => (S::SERVICE_UNAVAILABLE, "draining"),
            ApiError::Timeout => (S::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Sealed => (S::SERVICE_UNAVAILABLE, "sealed"),
            ApiError::UnsealRefused(_) => (S::BAD_REQUEST, "unseal_refused"),
            ApiError::ShareInvalid(_) => (S::BAD_REQUEST, "share_invalid"),
            ApiError::SsoNotConfigured => (S::NOT_FOUND, "sso_not_configured"),
            ApiError::SsoFailed(_) => (S::UNAUTHORIZED, "sso_failed"),
            ApiError::SsoNoRole => (S::FORBIDDEN, "sso_no_role"),
            ApiError::SsoProviderUnavailable(_) => (S::BAD_GATEWAY, "sso_provider_unavailable"),
            ApiError::ModelImportBusy(_) => (S::CONFLICT, "import_in_progress"),
            ApiError::FirmwareUpdateBusy(_) => (S::CONFLICT, "update_in_progress"),
            ApiError::NotTheImage => (S::CONFLICT, "not_the_image"),
            ApiError::SiteInvalid(_) => (S::UNPROCESSABLE_ENTITY, "site_invalid"),
            ApiError::ModelSigningKeyMissing(_) => (S::CONFLICT, "model_signing_key_missing"),
            ApiError::BundleRefused(_) => (S::UNPROCESSABLE_ENTITY, "bundle_refused"),
            ApiError::ModelExists(_) => (S::CONFLICT, "model_exists"),
            ApiError::VllmDirNotConfigured(_) => (S::CONFLICT, "vllm_dir_not_configured"),
            ApiError::LengthRequired => (S::LENGTH_REQUIRED, "length_required"),
            ApiError::BundleTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "bundle_too_large"),
            ApiError::TaskEventsFull(_) => (S::PAYLOAD_TOO_LARGE, "task_events_full"),
            // An admin's request: what the model server said helps, and is theirs to see.
            ApiError::ModelServerRefused(_) => (S::FAILED_DEPENDENCY, "model_server_refused"),
            ApiError::Integrity(_) => (S::INTERNAL_SERVER_ERROR, "integrity"),
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Why a credential was not taken, in words that say what to do.
fn unauthenticated_detail(why: Option<tether_domain::auth::AuthError>) -> String {
    use tether_domain::auth::AuthError as A;
    match why {
        None | Some(A::Missing) => "authentication required: present a valid bearer token or log in".into(),
        Some(A::Malformed) => "this is not a Tether API token (they start tether_): check TETHER_TOKEN".into(),
        Some(A::Unknown) => "this token is not known to this appliance: check TETHER_TOKEN, or create one".into(),
        Some(A::Revoked) => "this token was revoked: create a new one (tether token create) or log in".into(),
        Some(A::Expired) => "this token has expired: create a new one (tether token create) or log in".into(),
        Some(A::HolderGone) => "the account this token belongs to is disabled or gone".into(),
        Some(A::HolderLacksRole) => {
            "this token carries a role its holder no longer has: create a new one for the current role".into()
        }
    }
}

/// A refusal that names the role asked with and the roles that may.
fn forbidden_detail(role: tether_domain::auth::Role, needed: &[tether_domain::auth::Role]) -> String {
    let names: Vec<&str> = needed.iter().map(|r| r.as_str()).collect();
    match names.as_slice() {
        [] => format!("your role ({role}) does not allow this; no role does"),
        [one] => format!("your role ({role}) does not allow this: it needs the {one} role"),
        [rest @ .., last] => {
            format!("your role ({role}) does not allow this: it needs one of the roles {} or {last}", rest.join(", "))
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = if status.is_server_error() {
            // A state the appliance reports once (degraded audit, a full
            // disk) is not logged again for every request it refuses.
            if matches!(
                self,
                ApiError::AuditDegraded | ApiError::InsufficientStorage | ApiError::Sealed | ApiError::Draining
            ) {
                tracing::debug!(code, "request refused");
            } else {
                tracing::error!(code, error = %self, "request failed");
            }
            None
        } else {
            // A detail may quote the request (a name, a label, a JSON
            // error): never more than a few KiB of it goes back.
            Some(tether_base::bounded::clip(&self.to_string(), tether_base::bounded::ECHOED).into_owned())
        };
        let problem = Problem {
            kind: format!("urn:tether:problem:{code}"),
            title: status.canonical_reason().unwrap_or("error"),
            status: status.as_u16(),
            code,
            detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let ApiError::Throttled(wait) | ApiError::RateLimited(wait) = self {
            response.headers_mut().insert(header::RETRY_AFTER, retry_after(wait));
        }
        response
    }
}

/// A `Retry-After` value for `wait`: whole seconds, rounded up, never zero.
pub fn retry_after(wait: std::time::Duration) -> HeaderValue {
    HeaderValue::from(u64::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u64::MAX).max(1))
}
