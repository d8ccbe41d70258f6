//! Single sign-on routes: send the browser to the identity provider, and
//! take it back with a code that becomes a console session.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::extract::{self, AnonymousOrigin};
use super::session::{cookie, host_cookie};
use super::{ApiError, AppState};
use tether_domain::auth::sessions;
use tether_domain::auth::sso::{self, BINDING_COOKIE, Callback};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginQuery {
    /// Make the provider ask for credentials again (re-authentication for
    /// sensitive actions).
    #[serde(default)]
    fresh: bool,
}

/// `303` to the provider, with the cookie that binds the sign-in to this browser.
pub async fn begin(State(state): State<AppState>, Query(query): Query<BeginQuery>) -> Result<Response, ApiError> {
    let sso = state.sso.as_ref().ok_or(ApiError::SsoNotConfigured)?;
    let begun = sso.begin(query.fresh).await?;
    let location = HeaderValue::from_str(&begun.redirect).map_err(ApiError::internal)?;
    let binding = host_cookie(BINDING_COOKIE, &begun.binding, "Lax", sso::SIGN_IN_WINDOW.as_secs())?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::SET_COOKIE, binding);
    Ok(response)
}

/// Where the provider sends the browser back. Answers a small page that
/// carries the browser on to the console: the session cookie is
/// `SameSite=Strict`, so the console must be reached by a navigation that
/// starts here, not as the tail of the provider's redirect.
pub async fn callback(
    State(state): State<AppState>,
    AnonymousOrigin(origin): AnonymousOrigin,
    headers: HeaderMap,
    Query(answer): Query<Callback>,
) -> Result<Response, ApiError> {
    let sso = state.sso.as_ref().ok_or(ApiError::SsoNotConfigured)?;
    let binding = extract::cookie(&headers, BINDING_COOKIE);
    let replacing = extract::session_cookie(&headers).and_then(sessions::key_of);
    let logged_in = sso.finish(answer, binding, replacing, &origin).await?;
    // The name passed `users::check_name`: nothing in it needs escaping.
    let page = format!(
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url=/\">\
         <title>Tether</title><p>Signed in as {}. <a href=\"/\">Continue to the console</a>.</p>\n",
        logged_in.user.name
    );
    let mut response = (StatusCode::OK, page).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.append(header::SET_COOKIE, cookie(&logged_in.cookie, state.accounts.lifetimes().absolute.as_secs())?);
    headers.append(header::SET_COOKIE, host_cookie(BINDING_COOKIE, "", "Lax", 0)?);
    Ok(response)
}
