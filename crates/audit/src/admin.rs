//! `GET /api/v1/admin/audit` (role admin): the records, newest first, a page at a time.

use axum::{
    Extension, Json, Router,
    extract::{Query, State},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tideway_runtime::{
    Problem,
    auth::{AdminUser, JwtVerifier},
};

use crate::{AuditStore, Record};

/// The path of the audit trail (`GET ?page=&page_size=`; role admin).
pub const AUDIT_PATH: &str = "/api/v1/admin/audit";

/// The most records a page holds.
const MAX_PAGE_SIZE: u32 = 200;

/// The answer of `GET /api/v1/admin/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// The page (from 1).
    pub page: u32,
    /// Records per page.
    pub page_size: u32,
    /// How many records there are.
    pub total: u64,
    /// This page's records, newest first.
    pub records: Vec<Record>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    page: Option<String>,
    page_size: Option<String>,
}

fn number(value: Option<&str>, name: &str, default: u32, max: u32) -> Result<u32, Problem> {
    match value {
        None => Ok(default),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Problem::invalid_query(
                name,
                format!("a whole number from 1 to {max}"),
            )),
        },
    }
}

/// `GET /api/v1/admin/audit` over `store`, verifying tokens with `verifier`.
pub fn admin_routes(store: AuditStore, verifier: Arc<JwtVerifier>) -> Router {
    Router::new()
        .route(AUDIT_PATH, get(list))
        .with_state(store)
        .layer(Extension(verifier))
}

/// The audit trail's records, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/admin/audit",
    tag = "audit",
    params(
        ("page" = Option<u32>, Query, minimum = 1, maximum = 1000000, description = "The page, from 1 (default 1)"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Records per page, 1 to 200 (default 50)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of the records, newest first", body = AuditPage),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn list(
    State(store): State<AuditStore>,
    _admin: AdminUser,
    Query(query): Query<PageQuery>,
) -> Response {
    let page = match number(query.page.as_deref(), "page", 1, 1_000_000) {
        Ok(page) => page,
        Err(problem) => return problem.into_response(),
    };
    let page_size = match number(query.page_size.as_deref(), "page_size", 50, MAX_PAGE_SIZE) {
        Ok(size) => size,
        Err(problem) => return problem.into_response(),
    };
    match store.page(page, page_size).await {
        Ok((total, records)) => Json(AuditPage {
            page,
            page_size,
            total,
            records,
        })
        .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "cannot read the audit trail");
            unavailable()
        }
    }
}

fn unavailable() -> Response {
    Problem::new(axum::http::StatusCode::SERVICE_UNAVAILABLE)
        .with_detail("the audit trail cannot be read now; try again shortly")
        .into_response()
}
