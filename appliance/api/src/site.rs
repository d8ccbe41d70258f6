//! The machine's network and time settings in the console (Network and
//! time): its host name, a static address or DHCP, the site's time
//! servers ([`tether_domain::firmware::site`]). The appliance only keeps
//! them in its data directory, audited, and hands them over; the root unit
//! watching for that (`tether-site.path`) applies them to the machine. Only the firmware
//! image has such a unit: on any other host the machine's network is its
//! owner's, and a change is refused.

use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::Caller;
use super::{ApiError, AppState};
use tether_domain::audit::{self, Event, Resource};
use tether_domain::firmware::site::{Site, SiteError};

#[derive(Debug, Serialize, Deserialize)]
pub struct SiteView {
    /// Whether this tether runs from the firmware image (elsewhere the
    /// settings are not the appliance's to change).
    pub on_the_image: bool,
    #[serde(flatten)]
    pub site: Site,
}

/// `GET /api/v1/system/site`.
pub async fn show(State(state): State<AppState>, _caller: Caller) -> Result<axum::Json<SiteView>, ApiError> {
    let site = Site::read(&state.config.data_dir).map_err(site_error)?;
    Ok(axum::Json(SiteView { on_the_image: state.firmware.is_some(), site }))
}

/// `PUT /api/v1/system/site`: the whole settings (what is left out goes
/// back to the image's default: DHCP, no time servers).
pub async fn change(
    State(state): State<AppState>,
    caller: Caller,
    axum::Json(site): axum::Json<Site>,
) -> Result<axum::Json<SiteView>, ApiError> {
    if state.firmware.is_none() {
        return Err(ApiError::NotTheImage);
    }
    site.check().map_err(site_error)?;
    let event = Event::new("system.site_changed", "update", Resource::new("site", "network-and-time"))
        .detail("hostname", site.hostname.as_deref().unwrap_or("tether"))
        .detail("network", site.network.as_ref().map_or("dhcp".to_owned(), |n| format!("static {}", n.address)))
        .detail("ntp", site.ntp.join(" "));
    // On record before it takes effect: the root unit applies what is written.
    let (now, origin) = (state.clock.now(), caller.origin.clone());
    state.store.write(move |tx| audit::append(tx, now, &origin, event)).await?;
    site.hand_over(&state.config.data_dir).map_err(site_error)?;
    Ok(axum::Json(SiteView { on_the_image: true, site }))
}

fn site_error(e: SiteError) -> ApiError {
    match e {
        SiteError::Invalid(reason) => ApiError::SiteInvalid(reason),
        other => ApiError::internal(other),
    }
}
