//! Static assets, embedded in the binary: the stylesheet, the icon, and the vendored htmx
//! and its SSE extension (versions and licences in `web/assets/vendor/README.md`).
//!
//! Vendored files carry their version in their name and never change, so they are cached
//! for a year; the stylesheet is revalidated by its ETag.

use axum::{
    Router,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};

use crate::AppState;

/// The stylesheet's address.
pub(crate) const STYLESHEET: &str = "/assets/app.css";
/// The site icon's address.
pub(crate) const ICON: &str = "/assets/icon.svg";
/// htmx's address.
pub(crate) const HTMX: &str = "/assets/vendor/htmx-2.0.11.min.js";
/// The SSE extension's address.
pub(crate) const HTMX_SSE: &str = "/assets/vendor/htmx-ext-sse-2.2.4.js";
/// Swagger UI's script (the API reference, `/api/docs`).
pub(crate) const SWAGGER_UI_JS: &str = "/assets/vendor/swagger-ui-5.35.0-bundle.js";
/// Swagger UI's stylesheet.
pub(crate) const SWAGGER_UI_CSS: &str = "/assets/vendor/swagger-ui-5.35.0.css";
/// What starts Swagger UI on the reference page.
pub(crate) const API_DOCS_JS: &str = "/assets/api-docs.js";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    immutable: bool,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: STYLESHEET,
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/app.css"),
        immutable: false,
    },
    Asset {
        path: ICON,
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/icon.svg"),
        immutable: false,
    },
    Asset {
        path: HTMX,
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/vendor/htmx-2.0.11.min.js"),
        immutable: true,
    },
    Asset {
        path: HTMX_SSE,
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/vendor/htmx-ext-sse-2.2.4.js"),
        immutable: true,
    },
    Asset {
        path: SWAGGER_UI_JS,
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/vendor/swagger-ui-5.35.0-bundle.js"),
        immutable: true,
    },
    Asset {
        path: SWAGGER_UI_CSS,
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/vendor/swagger-ui-5.35.0.css"),
        immutable: true,
    },
    Asset {
        path: API_DOCS_JS,
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/api-docs.js"),
        immutable: false,
    },
];

pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for (index, asset) in ASSETS.iter().enumerate() {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(index, &headers) }),
        );
    }
    router
}

/// A strong ETag for `body`.
pub(crate) fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether the request's `If-None-Match` names `etag`.
pub(crate) fn matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        })
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.get(index) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let tag = etag(asset.body);
    let cache = if asset.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300, must-revalidate"
    };
    let mut response = if matches(headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(value) = HeaderValue::from_str(&tag) {
        out.insert(header::ETAG, value);
    }
    response
}
