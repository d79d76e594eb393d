//! The HTTP API: `GET /notifications?limit=` (the caller's own, newest first) and
//! `GET /recent?limit=` (everyone's, admins only).

use axum::{Router, extract::State, routing::get};
use serde::Deserialize;
use tideway_notification_api::{DEFAULT_LIMIT, MAX_LIMIT, NotificationPage};
use tideway_runtime::{
    Problem,
    auth::{AdminUser, AuthUser},
    extract::{Json, Query},
};

use crate::{AppState, error::ApiError, store};

/// The routes, relative to the service's prefix.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/notifications", get(mine))
        .route("/recent", get(recent))
}

/// The query string of both lists.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    limit: Option<i64>,
}

fn limit(params: &ListParams) -> Result<u32, ApiError> {
    let limit = params.limit.unwrap_or(i64::from(DEFAULT_LIMIT));
    u32::try_from(limit)
        .ok()
        .filter(|l| (1..=MAX_LIMIT).contains(l))
        .ok_or_else(|| ApiError::InvalidQuery {
            param: "limit".to_owned(),
            reason: format!("must be between 1 and {MAX_LIMIT}"),
        })
}

#[utoipa::path(
    get,
    path = "/api/v1/notification/notifications",
    tag = "notification",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "How many, 1 to 100 (default 20)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's latest emails, newest first", body = NotificationPage),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
    )
)]
pub(crate) async fn mine(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(params): Query<ListParams>,
) -> Result<Json<NotificationPage>, ApiError> {
    let limit = limit(&params)?;
    let items = store::latest(&state.db, Some(&user.sub), i64::from(limit)).await?;
    Ok(Json(NotificationPage { items, limit }))
}

#[utoipa::path(
    get,
    path = "/api/v1/notification/recent",
    tag = "notification",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "How many, 1 to 100 (default 20)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every customer's latest emails, newest first", body = NotificationPage),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
    )
)]
pub(crate) async fn recent(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(params): Query<ListParams>,
) -> Result<Json<NotificationPage>, ApiError> {
    let limit = limit(&params)?;
    let items = store::latest(&state.db, None, i64::from(limit)).await?;
    Ok(Json(NotificationPage { items, limit }))
}
