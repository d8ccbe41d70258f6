//! The LLM gateway's management routes: virtual keys, upstreams, the
//! enforcement prompts, usage and the prompt log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use tether_domain::auth::{Scope, users};
use tether_domain::llm::keys::{Enforcement, KeyPolicy, Limits, NewKey, VirtualKey};
use tether_domain::llm::prompt_log;
use tether_domain::llm::upstreams::{UpstreamInfo, UpstreamSettings};
use tether_domain::llm::usage::UsageRow;

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
    let ttl = super::people::credential_ttl(&state, body.ttl.as_deref())?;
    let now = state.clock.now();
    let enforcement = body.enforcement.unwrap_or(Enforcement::Standard);
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
    let (key, secret) = state.llm.issue_key(&caller.origin, new).await?;
    state.monitor.key_created();
    Ok((StatusCode::CREATED, axum::Json(KeyCreated { key: Zeroizing::new(secret), view: key.into() })))
}

pub async fn list_keys(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<KeyView>>, ApiError> {
    let owner = (caller.scope != Scope::All).then_some(caller.principal.as_str());
    let keys = state.llm.keys(owner)?;
    Ok(axum::Json(keys.into_iter().map(KeyView::from).collect()))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let owner = (caller.scope != Scope::All).then(|| caller.principal.clone());
    state.llm.revoke_key(&caller.origin, id, owner).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn put_upstream(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(settings): ApiJson<UpstreamSettings>,
) -> Result<axum::Json<UpstreamInfo>, ApiError> {
    Ok(axum::Json(state.llm.set_upstream(&caller.origin, &caller.principal, name, settings).await?))
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
        .llm
        .upstreams()?
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
    let removed = state.llm.remove_upstream(&caller.origin, name).await?;
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
    state.llm.set_prompt(&caller.origin, level, body.prompt).await?;
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
    Ok(axum::Json(state.llm.usage(&from, &to, owner.as_deref())?))
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
) -> Result<axum::Json<Vec<prompt_log::Entry>>, ApiError> {
    let limit = query.limit.unwrap_or(20).clamp(1, 100);
    let entries = state.llm.read_prompt_log(&caller.origin, query.key.as_deref(), limit).await?;
    Ok(axum::Json(entries))
}
