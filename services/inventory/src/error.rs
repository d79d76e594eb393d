//! The one error type of the inventory's HTTP handlers and how each variant is answered.

use axum::response::{IntoResponse, Response};
use tideway_runtime::Problem;
use tideway_store::DbError;

/// Why an inventory request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A body field has a wrong value (422).
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field's name.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// A query parameter has a wrong value (400, like the query extractor's rejections).
    #[error("{param}: {reason}")]
    InvalidQuery {
        /// The parameter's name.
        param: String,
        /// Why it was refused.
        reason: String,
    },
    /// No stock row for that item (404).
    #[error("{0}")]
    NotFound(String),
    /// The database failed: 503, 409 or an opaque 500 by its class, logged once.
    #[error(transparent)]
    Database(#[from] DbError),
    /// Something that should not happen (an event that cannot be encoded): an opaque 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A wrong body field.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A wrong query parameter.
    pub fn query(param: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidQuery {
            param: param.into(),
            reason: reason.into(),
        }
    }

    /// The problem document answered for this error.
    pub fn problem(&self) -> Problem {
        match self {
            Self::InvalidField { field, reason } => Problem::invalid_field(field, reason),
            Self::InvalidQuery { param, reason } => Problem::invalid_query(param, reason),
            Self::NotFound(what) => Problem::not_found(what),
            Self::Database(err) => err.problem(),
            Self::Internal(_) => Problem::internal(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(DbError::new(tideway_inventory_api::SERVICE, err))
    }
}

impl From<tideway_bus::BusError> for ApiError {
    fn from(err: tideway_bus::BusError) -> Self {
        match err {
            tideway_bus::BusError::Db(err) => err.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Database(err) => err.respond(),
            Self::Internal(message) => {
                tracing::error!(error = %message, "an inventory request failed");
                self.problem().into_response()
            }
            _ => self.problem().into_response(),
        }
    }
}
