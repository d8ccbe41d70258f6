//! The web console: `web-ui/`'s files, embedded in the binary, served from
//! the API listener. `/` is the page itself (the console's CSP comes with
//! every `text/html` answer, see [`super::browser`]); everything it loads
//! lives under `/assets/<build>/`, where `<build>` is a digest of every
//! file, so a page is never served with another build's scripts and the
//! files may be cached for good. The console talks only to the public API.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use super::ApiError;

#[derive(RustEmbed)]
#[folder = "../../web-ui/"]
struct Files;

/// Where the page's files are: the prefix its `{{assets}}` placeholders become.
pub const ASSETS: &str = "/assets";
const INDEX: &str = "index.html";

/// A digest of every file's path and content: the build's name in asset paths.
fn build() -> &'static str {
    static BUILD: OnceLock<String> = OnceLock::new();
    BUILD.get_or_init(|| {
        let mut all = Vec::new();
        for path in Files::iter() {
            if let Some(file) = Files::get(&path) {
                all.extend_from_slice(path.as_bytes());
                all.extend_from_slice(&file.metadata.sha256_hash());
            }
        }
        hex::encode(&tether_base::secret::sha256(&all)[..8])
    })
}

/// `GET /`: the console page, naming this build's files.
pub async fn index() -> Result<Response, ApiError> {
    page("serve")
}

/// `GET /` in setup mode: the same page, which then shows the setup wizard.
pub async fn setup_index() -> Result<Response, ApiError> {
    page("setup")
}

/// The page for `mode` (`serve` or `setup`, in its `tether-mode` meta tag).
fn page(mode: &str) -> Result<Response, ApiError> {
    let html = Files::get(INDEX).map(|f| String::from_utf8_lossy(&f.data).into_owned()).ok_or(ApiError::NotFound)?;
    let page = html.replace("{{assets}}", &format!("{ASSETS}/{}", build())).replace("{{mode}}", mode);
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], page).into_response())
}

/// `GET /assets/{build}/{*path}`: one of this build's files, cacheable for
/// good; another build's, or a file that is not there, is 404.
pub async fn asset(Path((wanted, path)): Path<(String, String)>) -> Result<Response, ApiError> {
    if wanted != build() || path == INDEX {
        return Err(ApiError::NotFound);
    }
    let file = Files::get(&path).ok_or(ApiError::NotFound)?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type(&path))),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
    ];
    Ok((StatusCode::OK, headers, file.data.into_owned()).into_response())
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Every file the page loads at first, with its size: the page weight.
pub fn files() -> Vec<(String, usize)> {
    Files::iter().filter_map(|p| Files::get(&p).map(|f| (p.into_owned(), f.data.len()))).collect()
}
