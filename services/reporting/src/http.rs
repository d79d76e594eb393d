//! The HTTP API, admins only: `GET /sales?from=&to=`, `GET /revenue?from=&to=`,
//! `GET /funnel` and `GET /top-items?limit=&from=&to=`. Days are `YYYY-MM-DD` (UTC),
//! both ends included.

use axum::{Router, extract::State, routing::get};
use serde::Deserialize;
use tideway_reporting_api::{DEFAULT_TOP, Funnel, MAX_TOP, RevenueReport, SalesReport, TopItems};
use tideway_runtime::{
    Problem,
    auth::AdminUser,
    extract::{Json, Query},
};

use crate::{
    AppState,
    error::ApiError,
    store::{self, Days},
};

/// The routes, relative to the service's prefix.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sales", get(sales))
        .route("/revenue", get(revenue))
        .route("/funnel", get(funnel))
        .route("/top-items", get(top_items))
}

/// The days of a report: `from` and `to`, both optional and inclusive.
#[derive(Debug, Default, Deserialize)]
pub struct DaysParams {
    from: Option<String>,
    to: Option<String>,
}

/// The query string of the top items.
#[derive(Debug, Default, Deserialize)]
pub struct TopParams {
    limit: Option<i64>,
    from: Option<String>,
    to: Option<String>,
}

/// `text` as a calendar day `YYYY-MM-DD`, or why not.
fn parse_day(param: &'static str, text: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::InvalidQuery {
        param,
        reason: "must be a day as YYYY-MM-DD".to_owned(),
    };
    let mut parts = text.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(invalid());
    }
    let year: i32 = y.parse().map_err(|_| invalid())?;
    let month: u8 = m.parse().map_err(|_| invalid())?;
    let day: u8 = d.parse().map_err(|_| invalid())?;
    let month = time::Month::try_from(month).map_err(|_| invalid())?;
    time::Date::from_calendar_date(year, month, day).map_err(|_| invalid())?;
    Ok(text.to_owned())
}

fn days(from: Option<&str>, to: Option<&str>) -> Result<Days, ApiError> {
    let mut days = Days::default();
    if let Some(from) = from {
        days.from = parse_day("from", from)?;
    }
    if let Some(to) = to {
        days.to = parse_day("to", to)?;
    }
    if days.to < days.from {
        return Err(ApiError::InvalidQuery {
            param: "to",
            reason: "must not be before from".to_owned(),
        });
    }
    Ok(days)
}

#[utoipa::path(
    get,
    path = "/api/v1/reporting/sales",
    tag = "reporting",
    params(
        ("from" = Option<String>, Query, description = "The first day, YYYY-MM-DD (UTC)"),
        ("to" = Option<String>, Query, description = "The last day, YYYY-MM-DD (UTC)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Units and revenue per item per day, oldest day first", body = SalesReport),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
    )
)]
pub(crate) async fn sales(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(params): Query<DaysParams>,
) -> Result<Json<SalesReport>, ApiError> {
    let days = days(params.from.as_deref(), params.to.as_deref())?;
    Ok(Json(store::sales(&state.db, &days).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/reporting/revenue",
    tag = "reporting",
    params(
        ("from" = Option<String>, Query, description = "The first day, YYYY-MM-DD (UTC)"),
        ("to" = Option<String>, Query, description = "The last day, YYYY-MM-DD (UTC)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Confirmed orders and revenue per day, oldest first", body = RevenueReport),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
    )
)]
pub(crate) async fn revenue(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(params): Query<DaysParams>,
) -> Result<Json<RevenueReport>, ApiError> {
    let days = days(params.from.as_deref(), params.to.as_deref())?;
    Ok(Json(store::revenue(&state.db, &days).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/reporting/funnel",
    tag = "reporting",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Orders placed, confirmed and cancelled (by reason)", body = Funnel),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
    )
)]
pub(crate) async fn funnel(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
) -> Result<Json<Funnel>, ApiError> {
    Ok(Json(store::funnel(&state.db).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/reporting/top-items",
    tag = "reporting",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "How many, 1 to 100 (default 10)"),
        ("from" = Option<String>, Query, description = "The first day, YYYY-MM-DD (UTC)"),
        ("to" = Option<String>, Query, description = "The last day, YYYY-MM-DD (UTC)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The items with the most units sold, most first", body = TopItems),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
    )
)]
pub(crate) async fn top_items(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(params): Query<TopParams>,
) -> Result<Json<TopItems>, ApiError> {
    let limit = params.limit.unwrap_or(i64::from(DEFAULT_TOP));
    let limit = u32::try_from(limit)
        .ok()
        .filter(|l| (1..=MAX_TOP).contains(l))
        .ok_or_else(|| ApiError::InvalidQuery {
            param: "limit",
            reason: format!("must be between 1 and {MAX_TOP}"),
        })?;
    let days = days(params.from.as_deref(), params.to.as_deref())?;
    Ok(Json(store::top_items(&state.db, &days, limit).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_must_be_calendar_days_in_order() {
        assert!(parse_day("from", "2026-02-28").is_ok());
        for bad in [
            "2026-02-30",
            "2026-2-01",
            "yesterday",
            "2026-13-01",
            "2026-01-01-01",
            "",
        ] {
            assert!(
                matches!(
                    parse_day("from", bad),
                    Err(ApiError::InvalidQuery { param: "from", .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            days(Some("2026-03-02"), Some("2026-03-01")),
            Err(ApiError::InvalidQuery { param: "to", .. })
        ));
        assert_eq!(days(None, None).ok(), Some(Days::default()));
    }
}
