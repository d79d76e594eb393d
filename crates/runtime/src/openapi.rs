//! What every service's OpenAPI document shares: the bearer-token security scheme its
//! protected operations name, and the merge of several services' documents into the one
//! the gateway serves.
//!
//! Each service derives its own document from its handlers (`#[utoipa::path]`) and its
//! contract crate's types (`utoipa::ToSchema`); problem answers are the
//! [`Problem`](crate::Problem) response (`application/problem+json`).

use utoipa::Modify as _;
use utoipa::openapi::{
    Components, OpenApi,
    security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

/// The name of the security scheme: a bearer access token (an EdDSA JWT from the identity
/// service) in `Authorization`.
pub const BEARER: &str = "bearer";

/// Adds the [`BEARER`] security scheme to a document (`#[openapi(modifiers(&BearerAuth))]`).
#[derive(Debug, Clone, Copy)]
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Components::new);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from `POST /api/v1/identity/login` (EdDSA JWT, 15 min)",
                    ))
                    .build(),
            ),
        );
    }
}

/// One document out of `documents` (paths, schemas, responses and security schemes of
/// all), under `title` and `version`.
pub fn merge(title: &str, version: &str, documents: impl IntoIterator<Item = OpenApi>) -> OpenApi {
    let mut merged = OpenApi::new(
        utoipa::openapi::Info::new(title, version),
        utoipa::openapi::Paths::new(),
    );
    for document in documents {
        merged.merge(document);
    }
    BearerAuth.modify(&mut merged);
    merged
}

/// Where a service process serves its own document (beside `/health/*`, outside the API's
/// prefix, so the gateway's routes never reach it): for a look at one process's contract.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// A router answering `GET` [`OPENAPI_PATH`] with `document`, rendered once.
pub fn route(document: &OpenApi) -> axum::Router {
    let body = bytes::Bytes::from(serde_json::to_vec(document).unwrap_or_default());
    axum::Router::new().route(
        OPENAPI_PATH,
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
        }),
    )
}
