//! The LLM gateway's routes: the OpenAI- and Ollama-compatible APIs that
//! clients call with a virtual key. The management routes (keys, upstreams,
//! prompts, usage) are in [`crate::llm_admin`].
//!
//! Gateway errors take each protocol's error shape, which its clients read
//! and show; `code` is stable.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::extract::AnonymousOrigin;
use super::{ApiError, AppState};
use tether_domain::auth::AuthError;
use tether_domain::llm::keys::VirtualKey;
use tether_domain::llm::limits::Standing;
use tether_domain::llm::wire::Protocol;
use tether_domain::llm::{Answer, GatewayError, Operation, Reply};

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
        GatewayError::Store(e) => return appliance_error(protocol, ApiError::from(e)),
        GatewayError::Vault(e) => return appliance_error(protocol, ApiError::from(e)),
        other => other,
    };
    let (kind, code) = match &e {
        GatewayError::Store(_) | GatewayError::Vault(_) => ("server_error", "internal"),
        GatewayError::BadRequest(_) => ("invalid_request_error", "invalid_request"),
        GatewayError::InvalidMaxTokens(_) => ("invalid_request_error", "invalid_max_tokens"),
        GatewayError::Untranslatable(_) => ("invalid_request_error", "unsupported_by_upstream"),
        GatewayError::DimensionsUnsupported { .. } => ("invalid_request_error", "dimensions_unsupported"),
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

/// An error of the appliance's own (the store, the vault), in the client's
/// protocol's shape rather than problem+json, with the same status, code
/// and headers (`Retry-After`).
fn appliance_error(protocol: Protocol, e: ApiError) -> Response {
    let (status, code) = e.status_and_code();
    let message =
        if status.is_server_error() { format!("the appliance cannot answer now ({code})") } else { e.to_string() };
    let problem = e.into_response();
    let mut response = error_in(protocol, status, "server_error", code, &message);
    if let Some(wait) = problem.headers().get(header::RETRY_AFTER) {
        response.headers_mut().insert(header::RETRY_AFTER, wait.clone());
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
            KeyRefused::Store(e) => appliance_error(protocol, ApiError::from(e)),
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
        Err(e) => return appliance_error(protocol, ApiError::from(e)),
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

/// `GET /api/ps`: the models this key may call that are loaded now.
pub async fn ollama_ps(
    State(state): State<AppState>,
    AnonymousOrigin(origin): AnonymousOrigin,
    headers: HeaderMap,
) -> Response {
    let key = match virtual_key(&state, &headers) {
        Ok(k) => k,
        Err(refused) => return refused.answer(&state, Protocol::Ollama, origin, "/api/ps").await,
    };
    match state.llm.running(&key).await {
        Ok(models) => axum::Json(json!({ "models": models })).into_response(),
        Err(e) => gateway_error(Protocol::Ollama, e),
    }
}

/// The Ollama release whose API the gateway speaks: clients read it to know
/// what they may ask (`/api/embed`, tools, `format` as a schema, `/api/ps`).
pub const OLLAMA_API_VERSION: &str = "0.12.0";

/// `GET /api/version`, without a key as Ollama answers it.
pub async fn ollama_version() -> Response {
    axum::Json(json!({ "version": OLLAMA_API_VERSION })).into_response()
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
