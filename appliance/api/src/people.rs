//! Accounts, role changes, API tokens and alerts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::config::parse_duration;
use tether_domain::audit::alerts::Alert;
use tether_domain::auth::roles::RoleChange;
use tether_domain::auth::tokens::TokenInfo;
use tether_domain::auth::users::UserInfo;
use tether_domain::auth::{Role, Scope};

pub async fn list_users(State(state): State<AppState>, _caller: Caller) -> Result<axum::Json<Vec<UserInfo>>, ApiError> {
    Ok(axum::Json(state.accounts.list()?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    role: Role,
    /// Omit to have one generated (returned once).
    password: Option<Zeroizing<String>>,
}

#[derive(Debug, Serialize)]
pub struct UserCreated {
    user: UserInfo,
    /// The generated first password, when none was given. Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    initial_password: Option<Zeroizing<String>>,
}

/// A live console session, by its public id.
#[derive(Debug, Serialize)]
pub struct SessionInfo {
    id: String,
    user: String,
    created_at: String,
    last_seen: String,
    authenticated_at: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsQuery {
    user: Option<String>,
}

/// `GET /api/v1/sessions`: everyone's live sessions (or `?user=`'s).
pub async fn list_sessions(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<SessionsQuery>,
) -> Result<axum::Json<Vec<SessionInfo>>, ApiError> {
    let sessions = state.accounts.sessions(query.user.as_deref())?;
    Ok(axum::Json(
        sessions
            .into_iter()
            .map(|s| SessionInfo {
                id: s.id,
                user: s.user,
                created_at: s.created_at.to_rfc3339(),
                last_seen: s.last_seen.to_rfc3339(),
                authenticated_at: s.authenticated_at.to_rfc3339(),
            })
            .collect(),
    ))
}

pub async fn add_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, axum::Json<UserCreated>), ApiError> {
    let (user, initial_password) =
        state.accounts.add_user(caller.person(), &body.name, body.role, body.password, &caller.origin).await?;
    Ok((StatusCode::CREATED, axum::Json(UserCreated { user, initial_password })))
}

pub async fn disable_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.accounts.disable(caller.person(), &name, &caller.origin).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    password: Option<Zeroizing<String>>,
}

#[derive(Debug, Serialize)]
pub struct PasswordReset {
    #[serde(skip_serializing_if = "Option::is_none")]
    initial_password: Option<Zeroizing<String>>,
}

pub async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ResetPassword>,
) -> Result<axum::Json<PasswordReset>, ApiError> {
    let initial_password = state.accounts.reset_password(&name, body.password, &caller.origin).await?;
    Ok(axum::Json(PasswordReset { initial_password }))
}

#[derive(Debug, Serialize)]
pub struct SessionsEnded {
    sessions_ended: usize,
}

pub async fn end_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<SessionsEnded>, ApiError> {
    let sessions_ended = state.accounts.end_sessions(&name, &caller.origin).await?;
    Ok(axum::Json(SessionsEnded { sessions_ended }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    role: Role,
}

#[derive(Debug, Serialize)]
pub struct RoleOutcome {
    result: RoleChange,
    role: Role,
}

pub async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<axum::Json<RoleOutcome>, ApiError> {
    let result = state.accounts.request_role(caller.person(), &name, body.role, &caller.origin).await?;
    Ok(axum::Json(RoleOutcome { result, role: body.role }))
}

pub async fn approve_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<RoleOutcome>, ApiError> {
    let role = state.accounts.approve_role(caller.person(), &name, &caller.origin).await?;
    Ok(axum::Json(RoleOutcome { result: RoleChange::Done, role }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    role: Role,
    /// Whom the token acts for: yourself (the default), or, for an admin,
    /// a service name that is no person's account.
    name: Option<String>,
    /// Like `90d`; default `token_ttl`, at most `token_max_ttl`.
    ttl: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TokenCreated {
    token: String,
    id: String,
    role: Role,
    name: String,
    expires_at: String,
}

/// Only the caller's own tokens, unless its grant covers everyone's.
fn owner_filter(caller: &Caller) -> Option<&str> {
    (caller.scope != Scope::All).then_some(caller.principal.as_str())
}

pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<(StatusCode, axum::Json<TokenCreated>), ApiError> {
    let expires_at = state.clock.now().plus(credential_ttl(&state, body.ttl.as_deref())?);
    let (record, token) =
        state.accounts.issue_token(&caller.origin, caller.asker(), body.name, body.role, expires_at).await?;
    state.monitor.key_created();
    let (id, role, name, expires_at) = (record.id, record.role, record.owner, record.expires_at.to_rfc3339());
    Ok((StatusCode::CREATED, axum::Json(TokenCreated { token, id, role, name, expires_at })))
}

pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<TokenInfo>>, ApiError> {
    Ok(axum::Json(state.accounts.tokens(owner_filter(&caller))?))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let owner = owner_filter(&caller).map(str::to_owned);
    state.accounts.revoke_token(&caller.origin, id, owner).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn rotate_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TokenCreated>, ApiError> {
    let owner = owner_filter(&caller).map(str::to_owned);
    let (record, token) = state.accounts.rotate_token(&caller.origin, id, owner).await?;
    Ok(axum::Json(TokenCreated {
        token,
        id: record.id,
        role: record.role,
        name: record.owner,
        expires_at: record.expires_at.to_rfc3339(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct AlertView {
    seq: u64,
    kind: String,
    subject: String,
    raised_at: String,
    details: std::collections::BTreeMap<String, String>,
}

impl From<Alert> for AlertView {
    fn from(a: Alert) -> AlertView {
        AlertView {
            seq: a.seq,
            kind: a.kind,
            subject: a.subject,
            raised_at: a.raised_at.to_rfc3339(),
            details: a.details,
        }
    }
}

/// The newest alerts first (at most `limit`, default 100).
pub async fn list_alerts(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> Result<axum::Json<Vec<AlertView>>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let alerts = state.monitor.alerts(limit)?;
    Ok(axum::Json(alerts.into_iter().map(AlertView::from).collect()))
}

/// The lifetime asked for a bearer credential (an API token, a virtual
/// key): `token_ttl` by default, never more than `token_max_ttl`.
pub(super) fn credential_ttl(state: &AppState, asked: Option<&str>) -> Result<std::time::Duration, ApiError> {
    let max_ttl = state.config.token_max_ttl;
    let ttl = match asked {
        Some(t) => parse_duration(t).map_err(ApiError::InvalidRequest)?,
        None => state.config.token_ttl,
    };
    if ttl.is_zero() || ttl > max_ttl {
        return Err(ApiError::InvalidRequest(format!(
            "ttl must be more than zero and at most {}d (token_max_ttl)",
            max_ttl.as_secs() / 86400
        )));
    }
    Ok(ttl)
}
