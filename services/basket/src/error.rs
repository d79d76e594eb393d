//! The one error type of the basket's endpoints, rendered as problem documents.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use tideway_runtime::{client::ClientError, problem::Problem};
use tideway_store::DbError;

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
    /// The database failed (500).
    #[error("database error")]
    Database(#[from] DbError),
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
