//! Extractors: JSON bodies and queries whose rejections are problem+json,
//! the authenticated caller, and the verified worker behind a connection.

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use tether_domain::audit::{self, Actor, ActorKind, Event, Origin, Outcome, Resource};
use tether_domain::auth::{self, Permission, Role, Scope, Via};
use tether_domain::pki::{PeerCert, WorkerRecord};

/// What the listener learned about the connection, attached to each request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// The verified client certificate's identity (worker gateway only).
    pub peer: Option<PeerCert>,
}

/// A JSON body. Unknown fields are refused by the target types themselves
/// (`deny_unknown_fields`); every rejection becomes problem+json.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::BytesRejection(e)) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge)
            }
            Err(e) => Err(ApiError::InvalidJson(e.body_text())),
        }
    }
}

/// A query string, with problem+json rejections.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| ApiError::InvalidRequest(e.body_text()))
    }
}

fn origin_from(parts_or_req_ext: &axum::http::Extensions, headers: &axum::http::HeaderMap, actor: Actor) -> Origin {
    let user_agent =
        headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(256).collect());
    Origin { actor, source_ip: parts_or_req_ext.get::<ConnInfo>().map(|c| c.remote.ip()), user_agent }
}

/// An authenticated person or program, and how far its grant reaches.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Whom the caller acts for (a person's account, or a token's owner).
    pub principal: String,
    pub role: Role,
    pub via: Via,
    pub scope: Scope,
    pub origin: Origin,
}

impl Caller {
    /// The principal as the accounts service knows it.
    pub fn as_principal(&self) -> auth::Principal {
        auth::Principal { name: self.principal.clone(), role: self.role, via: self.via.clone() }
    }

    /// The person answerable for this request (a service token's holder,
    /// not its service name): whom the separation-of-duties rules see.
    pub fn person(&self) -> &str {
        match &self.via {
            Via::Token { holder, .. } => holder.person_or(&self.principal),
            Via::Session { .. } => &self.principal,
        }
    }

    /// Who stands behind what this caller makes (a token, a key): the
    /// person, or the appliance for its broker-core bootstrap token.
    /// The caller as someone asking for a new token.
    pub fn asker(&self) -> auth::tokens::Asker {
        let (name, role, everyone) = (self.principal.clone(), self.role, self.scope == auth::Scope::All);
        auth::tokens::Asker { name, role, everyone, holder: self.holder() }
    }

    pub fn holder(&self) -> auth::tokens::Holder {
        match &self.via {
            Via::Token { holder, .. } => holder.clone(),
            Via::Session { .. } => auth::tokens::Holder::Person(self.principal.clone()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Set by `authorize`; a route without it was wired wrongly.
        parts.extensions.get::<Caller>().cloned().ok_or(ApiError::internal("route has no authorization"))
    }
}

/// The CSRF token header a console session's state-changing requests carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    cookie(headers, auth::sessions::COOKIE)
}

/// The value of the cookie `wanted`, if the request carries it.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, wanted: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value)
}

/// Route middleware: authenticates the bearer token or the session cookie
/// and checks `permission` against the one permission table. A session
/// must also be set up (or be using its own account's routes), carry its
/// CSRF token on state-changing methods, and have authenticated recently
/// for sensitive permissions. Failures and denials are audited.
pub async fn authorize(
    State((state, permission)): State<(AppState, Permission)>,
    mut req: Request,
    next: Next,
) -> Response {
    if permission == Permission::Public {
        if req.method() != axum::http::Method::GET {
            let ip = req.extensions().get::<ConnInfo>().map(|c| c.remote.ip());
            if let Some(Err(wait)) = ip.map(|ip| state.public_limit.take(ip, state.clock.now())) {
                return ApiError::RateLimited(wait).into_response();
            }
        }
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let verdict = match (bearer, session_cookie(req.headers())) {
        (Some(secret), _) => state.accounts.token_principal(secret),
        (None, Some(cookie)) => state.accounts.session_principal(cookie),
        (None, None) => Ok(Err(auth::AuthError::Missing)),
    };
    let principal = match verdict {
        Ok(Ok(p)) => p,
        Ok(Err(why)) => {
            let origin = origin_from(req.extensions(), req.headers(), Actor::anonymous());
            let event = Event::new("auth.failed", "authenticate", Resource::new("route", req.uri().path()))
                .outcome(Outcome::Failure)
                .detail("reason", why.reason());
            return match failed_authentication(&state, origin, event).await {
                ApiError::Unauthenticated(_) => ApiError::Unauthenticated(Some(why)),
                other => other,
            }
            .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let actor = match &principal.via {
        Via::Token { id, .. } => {
            Actor { kind: ActorKind::Token, id: id.clone(), roles: vec![principal.role.to_string()] }
        }
        Via::Session { .. } => {
            Actor { kind: ActorKind::User, id: principal.name.clone(), roles: vec![principal.role.to_string()] }
        }
    };
    let origin = origin_from(req.extensions(), req.headers(), actor);
    if let Err(refusal) = session_rules(&state, &principal, permission, &req) {
        let event = Event::new("auth.denied", "authorize", Resource::new("route", req.uri().path()))
            .outcome(Outcome::Denied)
            .detail("method", req.method())
            .detail("reason", refusal.status_and_code().1);
        record(&state, origin, event).await;
        return refusal.into_response();
    }
    let Some(scope) = auth::grant(principal.role, permission) else {
        let event = Event::new("auth.denied", "authorize", Resource::new("route", req.uri().path()))
            .outcome(Outcome::Denied)
            .detail("method", req.method())
            .detail("principal", &principal.name);
        record(&state, origin, event).await;
        return ApiError::Forbidden { role: principal.role, needed: auth::roles_with(permission) }.into_response();
    };
    if let Err(e) = state.accounts.note_use(&principal).await {
        return ApiError::from(e).into_response();
    }
    let auth::Principal { name, role, via } = principal;
    req.extensions_mut().insert(Caller { principal: name, role, via, scope, origin });
    next.run(req).await
}

/// What a console session must also satisfy; bearer tokens pass.
fn session_rules(
    state: &AppState,
    principal: &auth::Principal,
    permission: Permission,
    req: &Request,
) -> Result<(), ApiError> {
    let Via::Session { key, set_up, fresh, .. } = &principal.via else { return Ok(()) };
    if !set_up && permission != Permission::OwnAccount {
        return Err(ApiError::AccountSetupRequired);
    }
    let safe = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if !safe {
        let expected = state.accounts.csrf_token(key)?;
        let presented = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !tether_base::secret::digests_equal(presented.as_bytes(), expected.as_bytes()) {
            return Err(ApiError::CsrfTokenInvalid);
        }
    }
    if permission.needs_recent_login(req.method() == axum::http::Method::POST) && !fresh {
        return Err(ApiError::ReauthenticationRequired);
    }
    Ok(())
}

/// Failed authentications of one kind from one source allowed in a failure
/// window (`audit_failure_window`) before the rest are answered 429; they
/// are tallied either way. Five a second over the default minute: more than
/// a person or a misconfigured script needs to see its mistake.
const FAILED_AUTH_BUDGET: u64 = 300;

/// Tallies a failed authentication (`audit::tally`) and says how to answer
/// it: 401, or 429 once the source has failed too often in the window.
pub async fn failed_authentication(state: &AppState, origin: Origin, event: Event) -> ApiError {
    let noted = state.failures.note(origin, event).await;
    if noted.in_window > FAILED_AUTH_BUDGET {
        return ApiError::RateLimited(noted.window_ends.since(state.clock.now()));
    }
    ApiError::Unauthenticated(None)
}

/// Appends an audit record on its own (for events with no other change).
pub async fn record(state: &AppState, origin: Origin, event: Event) {
    let now = state.clock.now();
    match state.store.write(move |tx| audit::append(tx, now, &origin, event)).await {
        Ok(_) => {}
        // The store reports its state once; the request is refused anyway.
        Err(tether_store::Error::Degraded) => {}
        Err(e) => tracing::error!(error = %e, "could not write an audit record"),
    }
}

/// An enrolled worker, identified by the certificate it presented in the
/// TLS handshake (which rustls has already verified against the CA), and
/// that certificate unexpired.
#[derive(Debug, Clone)]
pub struct WorkerCaller {
    pub record: WorkerRecord,
    pub peer: PeerCert,
    pub origin: Origin,
}

impl FromRequestParts<AppState> for WorkerCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = worker_caller(parts, state).await?;
        if caller.peer.not_after < state.clock.now() {
            return Err(ApiError::CertificateExpired);
        }
        Ok(caller)
    }
}

/// A worker asking to renew: like [`WorkerCaller`], but its certificate may
/// have expired within the renewal grace window (the worker was offline).
/// The handshake proved it holds the certificate's key either way.
#[derive(Debug, Clone)]
pub struct RenewingWorker(pub WorkerCaller);

impl FromRequestParts<AppState> for RenewingWorker {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = worker_caller(parts, state).await?;
        // The listener admits such a certificate only within the window; a
        // connection kept open since then must not outlast it.
        if caller.peer.not_after.plus(state.config.worker_cert_grace) < state.clock.now() {
            return Err(ApiError::CertificateExpired);
        }
        Ok(RenewingWorker(caller))
    }
}

async fn worker_caller(parts: &Parts, state: &AppState) -> Result<WorkerCaller, ApiError> {
    let peer = parts.extensions.get::<ConnInfo>().and_then(|c| c.peer.clone()).ok_or(ApiError::CertificateRequired)?;
    let record = state.authority.admit(&peer).await?;
    let actor = Actor { kind: ActorKind::Worker, id: record.id.to_string(), roles: vec![Role::Worker.to_string()] };
    let origin = origin_from(&parts.extensions, &parts.headers, actor);
    Ok(WorkerCaller { record, peer, origin })
}

/// The origin of an unauthenticated request (enrollment).
pub fn anonymous_origin(parts: &Parts) -> Origin {
    origin_from(&parts.extensions, &parts.headers, Actor::anonymous())
}

/// The same, from a whole request (for middleware).
pub fn anonymous_origin_of(req: &Request) -> Origin {
    origin_from(req.extensions(), req.headers(), Actor::anonymous())
}

/// Extracts the anonymous origin.
#[derive(Debug, Clone)]
pub struct AnonymousOrigin(pub Origin);

impl<S: Send + Sync> FromRequestParts<S> for AnonymousOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(AnonymousOrigin(anonymous_origin(parts)))
    }
}
