//! The LLM gateway's routes: the OpenAI- and Ollama-compatible APIs that
//! clients call with a virtual key, and the management routes for keys,
//! upstreams and the enforcement prompts.
//!
//! Gateway errors take each protocol's error shape, which its clients read
//! and show; `code` is stable.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::extract::{AnonymousOrigin, ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use tether_domain::auth::{AuthError, Scope, users};
use tether_domain::llm::keys::{self, Enforcement, KeyPolicy, Limits, NewKey, VirtualKey};
use tether_domain::llm::limits::Standing;
use tether_domain::llm::upstreams::{self, Upstream, UpstreamInfo, UpstreamKind};
use tether_domain::llm::usage::{self, UsageRow};
use tether_domain::llm::wire::Protocol;
use tether_domain::llm::{Answer, GatewayError, Operation, Reply, prompts};

/// An error in the shape the client's protocol has: OpenAI's
/// `{"error": {"message", "type", "code"}}` or Ollama's `{"error": message}`.
fn error_in(protocol: Protocol, status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    // A message may quote the request (a model name): a few KiB at most.
    let message = tether_base::bounded::clip(message, tether_base::bounded::ECHOED);
    let body = match protocol {
        Protocol::OpenAi => json!({"error": {"message": message, "type": kind, "code": code}}),
        Protocol::Ollama => json!({"error": message, "code": code}),
    };
    (status, axum::Json(body)).into_response()
}

/// A gateway error, for a client of `protocol`.
fn gateway_error(protocol: Protocol, e: GatewayError) -> Response {
    let (status, message) = (StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY), e.to_string());
    let e = match e {
        GatewayError::Store(e) => return ApiError::from(e).into_response(),
        GatewayError::Vault(e) => return ApiError::from(e).into_response(),
        other => other,
    };
    let (kind, code) = match &e {
        GatewayError::Store(_) | GatewayError::Vault(_) => ("server_error", "internal"),
        GatewayError::BadRequest(_) => ("invalid_request_error", "invalid_request"),
        GatewayError::InvalidMaxTokens(_) => ("invalid_request_error", "invalid_max_tokens"),
        GatewayError::ModelNotAllowed(_) => ("permission_error", "model_not_allowed"),
        GatewayError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
        GatewayError::Unavailable => ("upstream_error", "upstream_unavailable"),
        GatewayError::UpstreamRefused(_) => ("upstream_error", "upstream_refused"),
        GatewayError::RateLimited { .. } => ("rate_limit_error", "rate_limit_exceeded"),
    };
    let mut response = error_in(protocol, status, kind, code, &message);
    if let GatewayError::RateLimited { retry_after, standing } = &e {
        let headers = response.headers_mut();
        rate_headers(headers, standing);
        headers.insert(header::RETRY_AFTER, super::error::retry_after(*retry_after));
    }
    response
}

/// The `x-ratelimit-*` headers OpenAI clients read (only for the limits
/// the key has).
fn rate_headers(headers: &mut HeaderMap, standing: &Standing) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    let reset = |d: std::time::Duration| format!("{}s", d.as_millis().div_ceil(1000));
    if let (Some(limit), Some(remaining)) = (standing.limit_requests, standing.remaining_requests) {
        set("x-ratelimit-limit-requests", limit.to_string());
        set("x-ratelimit-remaining-requests", remaining.to_string());
        set("x-ratelimit-reset-requests", reset(standing.reset_requests));
    }
    if let (Some(limit), Some(remaining)) = (standing.limit_tokens, standing.remaining_tokens) {
        set("x-ratelimit-limit-tokens", limit.to_string());
        set("x-ratelimit-remaining-tokens", remaining.to_string());
        set("x-ratelimit-reset-tokens", reset(standing.reset_tokens));
    }
}

/// Why a gateway request was not let in.
enum KeyRefused {
    Invalid,
    Store(tether_store::Error),
}

impl KeyRefused {
    /// The answer; a key that is not accepted is audited like any failed
    /// authentication.
    async fn answer(
        self,
        state: &AppState,
        protocol: Protocol,
        origin: tether_domain::audit::Origin,
        route: &str,
    ) -> Response {
        if let KeyRefused::Invalid = self {
            let event = tether_domain::audit::Event::new(
                "auth.failed",
                "authenticate",
                tether_domain::audit::Resource::new("route", route),
            )
            .outcome(tether_domain::audit::Outcome::Failure)
            .detail("credential", "llm_key");
            if let ApiError::RateLimited(wait) = super::extract::failed_authentication(state, origin, event).await {
                let mut response = error_in(
                    protocol,
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limited",
                    "too many failed authentications from this address; slow down",
                );
                response.headers_mut().insert(header::RETRY_AFTER, super::error::retry_after(wait));
                return response;
            }
        }
        self.response(protocol)
    }

    fn response(self, protocol: Protocol) -> Response {
        match self {
            KeyRefused::Invalid => error_in(
                protocol,
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
                "a valid virtual key is required (Authorization: Bearer tvk_…)",
            ),
            KeyRefused::Store(e) => ApiError::from(e).into_response(),
        }
    }
}

/// The virtual key a gateway request presents (`Authorization: Bearer`).
fn virtual_key(state: &AppState, headers: &HeaderMap) -> Result<VirtualKey, KeyRefused> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let verdict = match presented {
        Some(secret) => state.llm.authenticate(secret),
        None => Ok(Err(AuthError::Missing)),
    };
    match verdict {
        Ok(Ok(key)) => Ok(key),
        Ok(Err(_)) => Err(KeyRefused::Invalid),
        Err(e) => Err(KeyRefused::Store(e)),
    }
}

/// `GET /v1/models` (OpenAI) and `GET /api/tags` (Ollama): the models this
/// key may call.
async fn models(
    state: &AppState,
    protocol: Protocol,
    origin: tether_domain::audit::Origin,
    headers: &HeaderMap,
) -> Response {
    let key = match virtual_key(state, headers) {
        Ok(k) => k,
        Err(refused) => return refused.answer(state, protocol, origin, "models").await,
    };
    let models = match state.llm.models(&key) {
        Ok(m) => m,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let body = match protocol {
        Protocol::OpenAi => {
            let data: Vec<Value> = models
                .iter()
                .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "tether"}))
                .collect();
            json!({"object": "list", "data": data})
        }
        Protocol::Ollama => {
            let data: Vec<Value> = models
                .iter()
                .map(|m| json!({"name": m, "model": m, "modified_at": "1970-01-01T00:00:00Z", "size": 0, "digest": ""}))
                .collect();
            json!({"models": data})
        }
    };
    axum::Json(body).into_response()
}

pub async fn openai_models(
    State(state): State<AppState>,
    AnonymousOrigin(origin): AnonymousOrigin,
    headers: HeaderMap,
) -> Response {
    models(&state, Protocol::OpenAi, origin, &headers).await
}

pub async fn ollama_tags(
    State(state): State<AppState>,
    AnonymousOrigin(origin): AnonymousOrigin,
    headers: HeaderMap,
) -> Response {
    models(&state, Protocol::Ollama, origin, &headers).await
}

/// A chat or embeddings request in either protocol, answered in the same protocol.
async fn call(
    state: &AppState,
    protocol: Protocol,
    operation: Operation,
    origin: tether_domain::audit::Origin,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let key = match virtual_key(state, headers) {
        Ok(k) => k,
        Err(refused) => return refused.answer(state, protocol, origin, operation.route(protocol)).await,
    };
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return gateway_error(protocol, GatewayError::BadRequest("the body must be a JSON object".into()));
    };
    let Reply { answer, standing } = match state.llm.call(&key, protocol, operation, request, &origin).await {
        Ok(reply) => reply,
        Err(e) => return gateway_error(protocol, e),
    };
    let mut response = match answer {
        Answer::Whole(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Answer::Stream(rx) => {
            let mut response = Body::new(Relay(rx)).into_response();
            let content_type = match protocol {
                Protocol::OpenAi => "text/event-stream",
                Protocol::Ollama => "application/x-ndjson",
            };
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    };
    rate_headers(response.headers_mut(), &standing);
    response
}

/// The route for `operation` in `protocol` (`Operation::route` names its
/// path): every one reads the body and hands it to [`call`].
pub fn gateway_route(protocol: Protocol, operation: Operation) -> axum::routing::MethodRouter<AppState> {
    axum::routing::post(
        move |State(state): State<AppState>,
              AnonymousOrigin(origin): AnonymousOrigin,
              headers: HeaderMap,
              body: Bytes| async move { call(&state, protocol, operation, origin, &headers, &body).await },
    )
}

/// `POST /api/show`: a model's details, for Ollama clients.
pub async fn ollama_show(
    State(state): State<AppState>,
    AnonymousOrigin(origin): AnonymousOrigin,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match virtual_key(&state, &headers) {
        Ok(k) => k,
        Err(refused) => return refused.answer(&state, Protocol::Ollama, origin, "/api/show").await,
    };
    let model = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("model").or_else(|| v.get("name")).and_then(Value::as_str).map(str::to_owned));
    let Some(model) = model else {
        return gateway_error(Protocol::Ollama, GatewayError::BadRequest("`model` is required".into()));
    };
    match state.llm.show(&key, &model).await {
        Ok(info) => axum::Json(info).into_response(),
        Err(e) => gateway_error(Protocol::Ollama, e),
    }
}

/// A response body fed event by event from the gateway's relay; dropping
/// it (the client went away) stops the relay and the upstream call.
struct Relay(mpsc::Receiver<Bytes>);

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|event| event.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    /// Whose key it is; a developer's keys are their own.
    owner: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    rpm: Option<u32>,
    tpm: Option<u32>,
    max_parallel: Option<u32>,
    /// Limits for single models, beside the key's own: model → limits.
    #[serde(default)]
    model_limits: std::collections::BTreeMap<String, LimitsBody>,
    /// Keep each call's prompt and answer, sealed; fixed for the key's life.
    #[serde(default)]
    log_prompts: bool,
    enforcement: Option<Enforcement>,
    ttl: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    rpm: Option<u32>,
    tpm: Option<u32>,
    max_parallel: Option<u32>,
}

impl From<LimitsBody> for Limits {
    fn from(b: LimitsBody) -> Limits {
        Limits { rpm: b.rpm, tpm: b.tpm, max_parallel: b.max_parallel }
    }
}

impl From<Limits> for LimitsBody {
    fn from(l: Limits) -> LimitsBody {
        LimitsBody { rpm: l.rpm, tpm: l.tpm, max_parallel: l.max_parallel }
    }
}

#[derive(Debug, Serialize)]
pub struct KeyView {
    id: String,
    owner: String,
    models: Vec<String>,
    rpm: Option<u32>,
    tpm: Option<u32>,
    max_parallel: Option<u32>,
    model_limits: std::collections::BTreeMap<String, LimitsBody>,
    log_prompts: bool,
    enforcement: &'static str,
    #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
    created_at: tether_base::clock::Timestamp,
    #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
    expires_at: tether_base::clock::Timestamp,
    created_by: String,
}

impl From<VirtualKey> for KeyView {
    fn from(k: VirtualKey) -> KeyView {
        KeyView {
            id: k.id,
            owner: k.owner,
            models: k.models,
            rpm: k.limits.rpm,
            tpm: k.limits.tpm,
            max_parallel: k.limits.max_parallel,
            model_limits: k.policy.model_limits.into_iter().map(|(m, l)| (m, l.into())).collect(),
            log_prompts: k.policy.log_prompts,
            enforcement: k.enforcement.as_str(),
            created_at: k.created_at,
            expires_at: k.expires_at,
            created_by: k.created_by,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct KeyCreated {
    /// The secret: shown once, stored only as a hash.
    key: Zeroizing<String>,
    #[serde(flatten)]
    view: KeyView,
}

pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<KeyBody>,
) -> Result<(StatusCode, axum::Json<KeyCreated>), ApiError> {
    let owner = body.owner.unwrap_or_else(|| caller.person().to_owned());
    if owner != caller.person() && caller.scope != Scope::All {
        return Err(ApiError::ExceedsYourRights("your keys are your own: leave out `owner`".into()));
    }
    users::check_name(owner.trim_start_matches(tether_domain::auth::sso_people::NAME_PREFIX))
        .map_err(|_| ApiError::InvalidRequest("owner must be a person's account name".into()))?;
    let enforcement = body.enforcement.unwrap_or(Enforcement::Standard);
    if body.models.iter().chain(body.model_limits.keys()).any(|m| m.is_empty() || m.len() > 200) {
        return Err(ApiError::InvalidRequest("model names are 1-200 characters".into()));
    }
    if let Some(model) = body.model_limits.keys().find(|m| !body.models.is_empty() && !body.models.contains(m)) {
        return Err(ApiError::InvalidRequest(format!("{model:?} has limits but is not among the key's models")));
    }
    if body.model_limits.values().any(|l| l.rpm.is_none() && l.tpm.is_none() && l.max_parallel.is_none()) {
        return Err(ApiError::InvalidRequest("a model's limits name at least one of rpm, tpm, max_parallel".into()));
    }
    let ttl = super::people::credential_ttl(&state, body.ttl.as_deref())?;
    let now = state.clock.now();
    let new = NewKey {
        owner,
        models: body.models,
        limits: Limits { rpm: body.rpm, tpm: body.tpm, max_parallel: body.max_parallel },
        policy: KeyPolicy {
            model_limits: body.model_limits.into_iter().map(|(m, l)| (m, l.into())).collect(),
            log_prompts: body.log_prompts,
        },
        enforcement,
        expires_at: now.plus(ttl),
    };
    let origin = caller.origin;
    let (key, secret) = state.store.write(move |tx| keys::issue(tx, now, &origin, new)).await?;
    Ok((StatusCode::CREATED, axum::Json(KeyCreated { key: Zeroizing::new(secret), view: key.into() })))
}

pub async fn list_keys(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<KeyView>>, ApiError> {
    let owner = (caller.scope != Scope::All).then_some(caller.principal.as_str());
    let keys = state.store.read(|tx| keys::list(tx, owner))?;
    Ok(axum::Json(keys.into_iter().map(KeyView::from).collect()))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let owner = (caller.scope != Scope::All).then(|| caller.principal.clone());
    let (now, origin) = (state.clock.now(), caller.origin);
    state.store.write(move |tx| keys::revoke(tx, now, &origin, &id, owner.as_deref())).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamBody {
    kind: UpstreamKind,
    url: String,
    models: Vec<String>,
    ca_pem: Option<String>,
    /// A bearer credential the upstream wants; sealed, never shown again.
    credential: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").field("kind", &self.kind).field("url", &self.url).finish_non_exhaustive()
    }
}

pub async fn put_upstream(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<UpstreamBody>,
) -> Result<axum::Json<UpstreamInfo>, ApiError> {
    upstreams::check(&name, &body.url, &body.models).map_err(ApiError::InvalidRequest)?;
    if let Some(ca) = &body.ca_pem {
        tether_base::tls::client(ca, None, tether_base::tls::CLIENT_HTTP_ALPN)
            .map_err(|e| ApiError::InvalidRequest(format!("ca_pem: {e}")))?;
    }
    let credential = match &body.credential {
        Some(secret) => Some(state.vault.encrypt(upstreams::credential_place(&name), secret.as_bytes())?),
        None => None,
    };
    let now = state.clock.now();
    let upstream = Upstream {
        name,
        kind: body.kind,
        url: body.url,
        models: body.models,
        ca_pem: body.ca_pem,
        credential,
        updated_at: now,
        updated_by: caller.principal.clone(),
    };
    let info = UpstreamInfo::from(&upstream);
    let origin = caller.origin;
    state.store.write(move |tx| upstreams::put(tx, now, &origin, &upstream)).await?;
    Ok(axum::Json(info))
}

/// An upstream as an admin sees it: its settings and its last health probe.
#[derive(Debug, Serialize)]
pub struct UpstreamView {
    #[serde(flatten)]
    info: UpstreamInfo,
    /// None until the first probe.
    health: Option<tether_domain::llm::gateway::Health>,
}

pub async fn list_upstreams(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<axum::Json<Vec<UpstreamView>>, ApiError> {
    let health = state.llm.health();
    let views = state
        .store
        .read(upstreams::list)?
        .iter()
        .map(|u| UpstreamView { info: UpstreamInfo::from(u), health: health.get(&u.name).cloned() })
        .collect();
    Ok(axum::Json(views))
}

pub async fn remove_upstream(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (now, origin) = (state.clock.now(), caller.origin);
    let removed = state.store.write(move |tx| upstreams::remove(tx, now, &origin, &name)).await?;
    if removed { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::NotFound) }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptBody {
    prompt: String,
}

pub async fn set_prompt(
    State(state): State<AppState>,
    caller: Caller,
    Path(level): Path<String>,
    ApiJson(body): ApiJson<PromptBody>,
) -> Result<StatusCode, ApiError> {
    let level: Enforcement = level.parse().map_err(ApiError::InvalidRequest)?;
    let (now, origin) = (state.clock.now(), caller.origin);
    state
        .store
        .write(move |tx| match prompts::set(tx, now, &origin, level, &body.prompt) {
            Ok(()) => Ok(Ok(())),
            Err(prompts::PromptError::Invalid(m)) => Ok(Err(ApiError::InvalidRequest(m))),
            Err(prompts::PromptError::Store(e)) => Err(e),
        })
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` (UTC).
    from: Option<String>,
    /// Last day, inclusive.
    to: Option<String>,
    /// Only this person's use (those who see everyone's).
    owner: Option<String>,
}

/// `GET /api/v1/llm/usage`: requests and tokens per day, owner, key and model.
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<axum::Json<Vec<UsageRow>>, ApiError> {
    let day = |v: Option<String>, default: &str| -> Result<String, ApiError> {
        let v = v.unwrap_or_else(|| default.to_owned());
        let ok = v.len() == 10
            && v.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
        if ok { Ok(v) } else { Err(ApiError::InvalidRequest(format!("{v:?} is not a day like 2026-11-26"))) }
    };
    let (from, to) = (day(query.from, "0000-01-01")?, day(query.to, "9999-12-31")?);
    let owner = match caller.scope {
        Scope::All => query.owner,
        _ => Some(caller.principal.clone()),
    };
    Ok(axum::Json(state.store.read(|tx| usage::report(tx, &from, &to, owner.as_deref()))?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptLogQuery {
    /// One key's calls only.
    key: Option<String>,
    /// The newest this many (default 20, at most 100: each may be megabytes).
    limit: Option<usize>,
}

/// `GET /api/v1/llm/prompt-log`: logged calls, opened; the reading is audited.
pub async fn prompt_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PromptLogQuery>,
) -> Result<axum::Json<Vec<tether_domain::llm::prompt_log::Entry>>, ApiError> {
    let limit = query.limit.unwrap_or(20).clamp(1, 100);
    let keys = state.vault.keys()?;
    let key = query.key.clone();
    let entries = state.store.read(|tx| tether_domain::llm::prompt_log::read(tx, &keys, key.as_deref(), limit))?;
    let event = tether_domain::audit::Event::new(
        "llm.prompt_log_read",
        "read",
        tether_domain::audit::Resource::new("llm_prompt_log", query.key.as_deref().unwrap_or("*")),
    )
    .detail("entries", entries.len())
    .detail("ids", entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>().join(","));
    let (now, origin) = (state.clock.now(), caller.origin);
    state.store.write(move |tx| tether_domain::audit::append(tx, now, &origin, event)).await?;
    Ok(axum::Json(entries))
}
