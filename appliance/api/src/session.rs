//! A person's own account: log in and out, the session, re-authentication,
//! their password and their second factor.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::extract::{AnonymousOrigin, ApiJson, Caller};
use super::{ApiError, AppState};
use tether_domain::auth::users::UserInfo;
use tether_domain::auth::{Credentials, Permission, Role, Via, grant, sessions};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: Zeroizing<String>,
    totp: Option<Zeroizing<String>>,
    recovery_code: Option<Zeroizing<String>>,
}

#[derive(Debug, Serialize)]
pub struct SessionView {
    user: UserInfo,
    session_id: String,
    /// Send this as `X-CSRF-Token` on every state-changing request.
    csrf_token: String,
    /// False until the account has its own password (and, for admin and
    /// security_officer, a second factor): only these routes answer.
    set_up: bool,
    /// Whether sensitive actions are open without re-authenticating.
    recently_authenticated: bool,
    /// The session waits for the appliance's own second factor (a single
    /// sign-on whose provider vouched for none): `POST
    /// /api/v1/auth/second-factor`, or enroll TOTP if `user.second_factor` is false.
    second_factor_pending: bool,
    /// What the role may do (the permission table's names): the console
    /// shows only these actions.
    permissions: Vec<Permission>,
    /// Which of those need a recent login (`reauth_until`): the console asks
    /// for the password again before them.
    sensitive: Vec<Permission>,
    #[serde(flatten)]
    lifespan: Lifespan,
}

/// When the session ends, so the console can warn before it does.
#[derive(Debug, Serialize)]
struct Lifespan {
    /// The session ends then, however busy.
    expires_at: String,
    /// It ends after this long without a request…
    idle_timeout_s: u64,
    /// …counted from as much as this before the last request (the last-seen
    /// time is written at most this often).
    idle_slack_s: u64,
    /// Sensitive actions are open without re-authenticating until then.
    reauth_until: String,
}

impl Lifespan {
    fn of(session: &sessions::Session, lifetimes: sessions::Lifetimes) -> Lifespan {
        Lifespan {
            expires_at: session.created_at.plus(lifetimes.absolute).to_rfc3339(),
            idle_timeout_s: lifetimes.idle.as_secs(),
            idle_slack_s: lifetimes.touch_after().as_secs(),
            reauth_until: session.authenticated_at.plus(lifetimes.reauth).to_rfc3339(),
        }
    }
}

fn sensitive_of(permissions: &[Permission]) -> Vec<Permission> {
    permissions.iter().copied().filter(|p| p.needs_recent_login(true)).collect()
}

/// The permissions `role` holds.
fn permissions_of(role: Role) -> Vec<Permission> {
    Permission::ALL.into_iter().filter(|p| *p != Permission::Public && grant(role, *p).is_some()).collect()
}

/// The session cookie: host-only, TLS-only, out of scripts' reach, never
/// sent on a request another site starts.
pub(super) fn cookie(value: &str, max_age_secs: u64) -> Result<HeaderValue, ApiError> {
    host_cookie(sessions::COOKIE, value, "Strict", max_age_secs)
}

/// A `__Host-` cookie (TLS only, this host only, path `/`), out of scripts' reach.
pub(super) fn host_cookie(
    name: &str,
    value: &str,
    same_site: &str,
    max_age_secs: u64,
) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}; Max-Age={max_age_secs}"
    ))
    .map_err(ApiError::internal)
}

/// Refuses password and second-factor routes to people whose credentials
/// live at the identity provider.
fn local_account(caller: &Caller) -> Result<(), ApiError> {
    if caller.principal.starts_with(tether_domain::auth::sso_people::NAME_PREFIX) {
        return Err(ApiError::InvalidRequest(
            "your account signs in through the identity provider: manage your password there, and re-authenticate \
             with GET /api/v1/auth/sso/login?fresh=true"
                .into(),
        ));
    }
    Ok(())
}

pub async fn login(
    State(state): State<AppState>,
    AnonymousOrigin(origin): AnonymousOrigin,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let credentials = Credentials { password: body.password, totp: body.totp, recovery_code: body.recovery_code };
    let logged_in = state.accounts.login(&body.username, credentials, &origin).await?;
    let permissions = permissions_of(logged_in.user.role);
    let view = SessionView {
        sensitive: sensitive_of(&permissions),
        permissions,
        lifespan: Lifespan::of(&logged_in.session, state.accounts.lifetimes()),
        user: logged_in.user,
        session_id: logged_in.session.id,
        csrf_token: logged_in.csrf,
        set_up: logged_in.set_up,
        recently_authenticated: true,
        second_factor_pending: false,
    };
    let max_age = state.accounts.lifetimes().absolute.as_secs();
    let mut response = (StatusCode::OK, axum::Json(view)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie(&logged_in.cookie, max_age)?);
    Ok(response)
}

fn session_key(caller: &Caller) -> Result<([u8; 32], String, bool, bool), ApiError> {
    match &caller.via {
        Via::Session { key, id, set_up, fresh, .. } => Ok((*key, id.clone(), *set_up, *fresh)),
        Via::Token { .. } => Err(ApiError::SessionRequired),
    }
}

/// Ends the session: 204, or for a person signed in through the identity
/// provider, 200 with `idp_logout_url`, where the browser goes to end the
/// provider's session too (or the next sign-in there needs no password).
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    session_key(&caller)?;
    state.accounts.logout(&caller.as_principal(), &caller.origin).await?;
    let idp_logout_url = match &state.sso {
        Some(sso) if caller.principal.starts_with(tether_domain::auth::sso_people::NAME_PREFIX) => {
            sso.logout_url().await
        }
        _ => None,
    };
    let mut response = match idp_logout_url {
        Some(url) => axum::Json(serde_json::json!({ "idp_logout_url": url })).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    response.headers_mut().insert(header::SET_COOKIE, cookie("", 0)?);
    Ok(response)
}

pub async fn current(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<SessionView>, ApiError> {
    let (key, session_id, set_up, fresh) = session_key(&caller)?;
    let user = state.accounts.account(&caller.principal)?.ok_or(ApiError::Unauthenticated(None))?;
    let session = state.accounts.live_session(&key)?.ok_or(ApiError::Unauthenticated(None))?;
    let permissions = permissions_of(caller.role);
    Ok(axum::Json(SessionView {
        sensitive: sensitive_of(&permissions),
        permissions,
        lifespan: Lifespan::of(&session, state.accounts.lifetimes()),
        user,
        session_id,
        csrf_token: state.accounts.csrf_token(&key)?,
        set_up,
        recently_authenticated: fresh,
        second_factor_pending: state.store.read(|tx| sessions::awaits_second_factor(tx, &key))?,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReauthBody {
    password: Zeroizing<String>,
    totp: Option<Zeroizing<String>>,
    recovery_code: Option<Zeroizing<String>>,
}

pub async fn reauthenticate(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ReauthBody>,
) -> Result<StatusCode, ApiError> {
    session_key(&caller)?;
    local_account(&caller)?;
    let credentials = Credentials { password: body.password, totp: body.totp, recovery_code: body.recovery_code };
    state.accounts.reauthenticate(&caller.as_principal(), credentials, &caller.origin).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    current: Zeroizing<String>,
    new: Zeroizing<String>,
}

pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    session_key(&caller)?;
    local_account(&caller)?;
    state.accounts.change_own_password(&caller.as_principal(), body.current, body.new, &caller.origin).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub struct TotpSetup {
    /// Type this into an authenticator app, or use the URI (as a QR code).
    secret: Zeroizing<String>,
    uri: Zeroizing<String>,
    /// The URI as a QR code, an SVG document drawn here (the console shows it
    /// as an image; no script draws it).
    qr_svg: Zeroizing<String>,
}

/// The URI as an SVG QR code.
fn qr_svg(uri: &str) -> Result<Zeroizing<String>, ApiError> {
    let code = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("the TOTP URI does not fit a QR code: {e}")))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build();
    Ok(Zeroizing::new(svg))
}

#[derive(Debug, Serialize)]
pub struct Methods {
    /// Local accounts: name, password and, for some roles, TOTP.
    password: bool,
    /// Single sign-on through the site's provider (`GET /api/v1/auth/sso/login`).
    sso: bool,
}

/// `GET /api/v1/auth/methods`: how people sign in here (for the sign-in page).
pub async fn methods(State(state): State<AppState>) -> axum::Json<Methods> {
    axum::Json(Methods { password: true, sso: state.sso.is_some() })
}

/// Hands out a TOTP secret: a local account's second factor, or a single
/// sign-on person's own one here (for when the provider vouches for none).
pub async fn begin_totp(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<TotpSetup>, ApiError> {
    session_key(&caller)?;
    let (secret, uri) = state.accounts.begin_totp(&caller.principal).await?;
    let qr_svg = qr_svg(&uri)?;
    Ok(axum::Json(TotpSetup { secret, uri, qr_svg }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirmBody {
    code: Zeroizing<String>,
}

#[derive(Debug, Serialize)]
pub struct RecoveryCodes {
    /// Each works once in place of a TOTP code. Shown once: keep them safe.
    recovery_codes: Vec<Zeroizing<String>>,
}

pub async fn confirm_totp(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<TotpConfirmBody>,
) -> Result<axum::Json<RecoveryCodes>, ApiError> {
    let (key, ..) = session_key(&caller)?;
    let recovery_codes = state.accounts.confirm_totp(&caller.principal, &body.code, Some(key), &caller.origin).await?;
    Ok(axum::Json(RecoveryCodes { recovery_codes }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorBody {
    totp: Option<Zeroizing<String>>,
    recovery_code: Option<Zeroizing<String>>,
}

/// The appliance's own second factor for a session waiting for one (see
/// [`SessionView::second_factor_pending`]): 204, and the session is set up.
pub async fn give_second_factor(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SecondFactorBody>,
) -> Result<StatusCode, ApiError> {
    session_key(&caller)?;
    let credentials =
        Credentials { password: Zeroizing::default(), totp: body.totp, recovery_code: body.recovery_code };
    state.accounts.give_second_factor(&caller.as_principal(), credentials, &caller.origin).await?;
    Ok(StatusCode::NO_CONTENT)
}
