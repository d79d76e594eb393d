//! `GET /api/v1/ordering/sagas`: the most recent checkout sagas with their steps and their
//! orders' status, for the operations console (admins only).

use axum::extract::State as Shared;
use serde::Deserialize;
use tideway_ordering_api::{SagaPage, SagaView};
use tideway_runtime::{
    Problem,
    auth::AdminUser,
    extract::{Json, Query},
};
use tideway_saga::SagaInstance;

use super::{State, bounded, entry, store};
use crate::{error::ApiError, time::from_ms};

/// The default number of sagas listed.
pub const DEFAULT_LIMIT: u32 = 20;
/// The most sagas listed at once.
pub const MAX_LIMIT: u32 = 100;

/// The query string of the listing, as sent (types checked by the extractor).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// How many sagas, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// `GET /api/v1/ordering/sagas?limit=N`: the `N` (default 20, at most 100) most recently
/// started sagas, newest first, each with its timeline and its order's status, reason and
/// trace id. Three reads whatever `N`: instances, their steps, their orders.
#[utoipa::path(
    get,
    path = "/api/v1/ordering/sagas",
    tag = "ordering",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The most recent checkout sagas, newest first", body = SagaPage),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
    )
)]
pub async fn list(
    Shared(state): Shared<State>,
    AdminUser(_admin): AdminUser,
    Query(params): Query<ListParams>,
) -> Result<Json<SagaPage>, ApiError> {
    let limit = bounded(params.limit, DEFAULT_LIMIT, MAX_LIMIT, "limit")?;
    let instances = state.engine.recent(limit).await?;
    let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
    let mut orders = store::summaries(&state.db, &ids).await?;
    let items = instances
        .into_iter()
        .map(|instance| {
            let order = orders.remove(&instance.id);
            view(instance, order)
        })
        .collect();
    Ok(Json(SagaPage { items, limit }))
}

fn view(instance: SagaInstance, order: Option<store::OrderSummary>) -> SagaView {
    let (order_status, order_reason, trace_id) = match order {
        Some(order) => (Some(order.status), order.reason, Some(order.trace_id)),
        None => (None, None, None),
    };
    SagaView {
        steps: instance.steps.iter().map(entry).collect(),
        status: instance.status.as_str().to_owned(),
        current_step: instance.current_step,
        waiting: instance.waiting,
        order_status,
        // The saga's reason is the first-hand one (the order's is copied from it once the
        // saga has ended), and it is there while the saga still compensates.
        reason: instance.reason.or(order_reason),
        trace_id,
        created_at: from_ms(instance.created_ms),
        updated_at: from_ms(instance.updated_ms),
        id: instance.id,
        saga: instance.saga,
    }
}
