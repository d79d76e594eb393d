//! Orders: the endpoints that show them, and (in [`store`]) their SQL; [`sagas`] lists
//! their checkout sagas for operators. Checkout, which places orders, builds on this
//! module (`checkout`); nothing here depends on it.

pub mod sagas;
pub mod store;

use axum::{Router, extract::State as Shared, routing::get};
use serde::Deserialize;
use tideway_ordering_api::{OrderPage, OrderView, PREFIX, TimelineEntry};
use tideway_runtime::{
    Problem,
    auth::{ADMIN_ROLE, AuthUser},
    extract::{Json, Path, Query},
};
use tideway_saga::{SagaEngine, StepRecord};
use tideway_store::Db;

use crate::{error::ApiError, time::from_ms};

/// The default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The largest page size.
pub const MAX_PAGE_SIZE: u32 = 100;
/// The largest page number (keeps offsets small).
pub const MAX_PAGE: u32 = 1_000_000;

/// What every handler shares: the orders and their sagas' timelines.
#[derive(Clone)]
pub struct State {
    pub db: Db,
    pub engine: SagaEngine,
}

/// The endpoints (without the standard stack).
pub fn routes(state: State) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/orders"), get(list))
        .route(&format!("{PREFIX}/orders/{{id}}"), get(show))
        .route(&format!("{PREFIX}/sagas"), get(sagas::list))
        .with_state(state)
}

/// The query string of the listing, as sent (types checked by the extractor).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// The page, 1 to 1,000,000 (default 1).
    #[param(minimum = 1, maximum = 1_000_000)]
    page: Option<i64>,
    /// Orders per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<i64>,
}

fn bounded(
    value: Option<i64>,
    default: u32,
    max: u32,
    name: &'static str,
) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(value) => u32::try_from(value)
            .ok()
            .filter(|v| (1..=max).contains(v))
            .ok_or_else(|| ApiError::query(name, format!("must be between 1 and {max}"))),
    }
}

/// `GET /api/v1/ordering/orders`: the caller's orders, newest first (no timelines).
#[utoipa::path(
    get,
    path = "/api/v1/ordering/orders",
    tag = "ordering",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's orders, newest first (without timelines)", body = OrderPage),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
    )
)]
pub(crate) async fn list(
    Shared(state): Shared<State>,
    AuthUser(user): AuthUser,
    Query(params): Query<ListParams>,
) -> Result<Json<OrderPage>, ApiError> {
    let page = bounded(params.page, 1, MAX_PAGE, "page")?;
    let page_size = bounded(
        params.page_size,
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
        "page_size",
    )?;
    let (items, total) = store::list(&state.db, &user.sub, page, page_size).await?;
    Ok(Json(OrderPage {
        items,
        page,
        page_size,
        total,
    }))
}

/// `GET /api/v1/ordering/orders/{id}`: one order with its saga's timeline; only its buyer and
/// admins see it (others get a 404, as if it did not exist).
#[utoipa::path(
    get,
    path = "/api/v1/ordering/orders/{id}",
    tag = "ordering",
    params(("id" = String, Path, description = "The order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order with its saga's timeline", body = OrderView),
        (status = 401, response = Problem),
        (status = 404, response = Problem),
    )
)]
pub(crate) async fn show(
    Shared(state): Shared<State>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let not_found = || ApiError::NotFound(format!("order {id} not found"));
    let mut order = store::load(&state.db, &id).await?.ok_or_else(not_found)?;
    if order.user_id != user.sub && !user.has_role(ADMIN_ROLE) {
        return Err(not_found());
    }
    if let Some(instance) = state.engine.instance(&id).await? {
        order.timeline = instance.steps.iter().map(entry).collect();
    }
    Ok(Json(order))
}

fn entry(step: &StepRecord) -> TimelineEntry {
    TimelineEntry {
        step: step.step.clone(),
        kind: step.kind.as_str().to_owned(),
        status: step.status.as_str().to_owned(),
        started_at: from_ms(step.started_ms),
        finished_at: step.finished_ms.map(from_ms),
        detail: step.detail.clone(),
    }
}
