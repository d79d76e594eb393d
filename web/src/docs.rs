//! The API's contract for people and tools: `GET /api/openapi.json`, the OpenAPI 3.1
//! document of every service merged (built by the binary from the services' own crates and
//! handed to the front), and `GET /api/docs`, Swagger UI over it. The UI is vendored
//! (`web/assets/vendor/`, see its README) and embedded like every asset; its start-up
//! script is a file too, so the page keeps a policy with no inline script.

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{AppState, assets};

/// Where the merged document is served.
pub const OPENAPI_JSON: &str = "/api/openapi.json";
/// Where the documentation page is served.
pub const DOCS: &str = "/api/docs";

/// The docs page's own policy: the site's, plus `data:` pictures (the UI's icons are inline
/// SVG in its stylesheet). Scripts still come from this origin's files only.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                        img-src 'self' data:; connect-src 'self'; font-src 'self'; \
                        form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
                        object-src 'none'";

/// The routes, when the binary gave the front a document; none otherwise.
pub(crate) fn routes(document: Option<Bytes>) -> Router<AppState> {
    let Some(document) = document else {
        return Router::new();
    };
    let etag = assets::etag(&document);
    Router::new()
        .route(
            OPENAPI_JSON,
            get(move |headers: HeaderMap| {
                let (document, etag) = (document.clone(), etag.clone());
                async move { serve_document(&headers, document, &etag) }
            }),
        )
        .route(DOCS, get(page))
}

fn serve_document(headers: &HeaderMap, document: Bytes, etag: &str) -> Response {
    let Ok(etag_value) = HeaderValue::from_str(etag) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let cache = HeaderValue::from_static("no-cache");
    if assets::matches(headers, etag) {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache),
        ],
        document,
    )
        .into_response()
}

async fn page() -> Response {
    let html = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Tideway API" }
                link rel="icon" href=(assets::ICON);
                link rel="stylesheet" href=(assets::SWAGGER_UI_CSS);
            }
            body {
                noscript {
                    p {
                        "The API reference needs JavaScript. The document itself: "
                        a href=(OPENAPI_JSON) { (OPENAPI_JSON) }
                    }
                }
                div id="swagger-ui" {}
                script src=(assets::SWAGGER_UI_JS) {}
                script src=(assets::API_DOCS_JS) {}
            }
        }
    };
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_CSP),
        )],
        html,
    )
        .into_response()
}
