//! The one error type of the reporting service's HTTP handlers and how each is answered.

use axum::response::{IntoResponse, Response};
use tideway_runtime::Problem;
use tideway_store::DbError;

/// Why a reporting request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter has a wrong value (400).
    #[error("{param}: {reason}")]
    InvalidQuery {
        /// The parameter's name.
        param: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The database failed: 503, 409 or an opaque 500 by its class, logged once.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(DbError::new(tideway_reporting_api::SERVICE, err))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::InvalidQuery { param, reason } => {
                Problem::invalid_query(*param, reason).into_response()
            }
            Self::Database(err) => err.respond(),
        }
    }
}
