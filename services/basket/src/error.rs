//! The one error type of the basket's endpoints, rendered as problem documents.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tideway_runtime::{client::ClientError, problem::Problem};
use tideway_store::{DbError, RETRY_AFTER_SECONDS};

use crate::store::{StoreError, redis::RedisError};

/// Why a basket request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field has a wrong value (422).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The item is not in the basket (404).
    #[error("{0}")]
    NotFound(String),
    /// The item is sold out: no unit can be added (409).
    #[error("{name:?} is sold out")]
    SoldOut {
        /// The item's id.
        item_id: String,
        /// The item's name.
        name: String,
    },
    /// The catalog has fewer units than the line would hold (409).
    #[error("only {stock} in stock, {requested} requested")]
    InsufficientStock {
        /// The line's quantity the request would lead to.
        requested: i64,
        /// The units in stock.
        stock: i64,
    },
    /// The catalog did not answer (503).
    #[error("the catalog is unavailable")]
    CatalogUnavailable(#[source] ClientError),
    /// The database failed (503 when out of reach, else 500).
    #[error("database error")]
    Database(#[from] DbError),
    /// Redis failed (503 when out of reach or too slow, else 500).
    #[error("redis error")]
    Redis(#[from] RedisError),
    /// A rule the code relies on did not hold (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 422 naming `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            Self::Invalid { field, reason } => Problem::invalid_field(*field, reason.clone()),
            Self::NotFound(what) => Problem::not_found(what.clone()),
            Self::SoldOut { item_id, .. } => Problem::new(StatusCode::CONFLICT)
                .with_type("/problems/sold-out")
                .with_title("Sold out")
                .with_detail(self.to_string())
                .with_param("item_id", format!("item {item_id} is sold out")),
            Self::InsufficientStock { requested, stock } => Problem::new(StatusCode::CONFLICT)
                .with_type("/problems/insufficient-stock")
                .with_title("Insufficient stock")
                .with_detail(self.to_string())
                .with_param(
                    "quantity",
                    format!("{requested} requested but only {stock} in stock"),
                ),
            Self::CatalogUnavailable(err) => {
                tracing::warn!(error = %err, "the catalog is unavailable; refusing the request");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_type("/problems/dependency-unavailable")
                    .with_detail("the catalog is unavailable; try again shortly")
            }
            Self::Database(err) => return err.respond(),
            Self::Redis(err) if err.is_unavailable() => {
                tracing::warn!(
                    error = err as &dyn std::error::Error,
                    "redis is unavailable; refusing the request"
                );
                let mut response = Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_type("/problems/unavailable")
                    .with_detail(
                        "the basket service cannot reach its store right now; try again shortly",
                    )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
                return response;
            }
            Self::Redis(err) => {
                tracing::error!(error = %err, "a basket request failed on redis");
                Problem::internal()
            }
            Self::Internal(message) => {
                tracing::error!(error = %message, "a basket request failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(DbError::new(tideway_basket_api::SERVICE, err))
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Sql(err) => Self::Database(err),
            StoreError::Redis(err) => Self::Redis(err),
            StoreError::Inbox(err) => Self::Internal(err.to_string()),
        }
    }
}
