//! The one error type of the payment service's HTTP handlers and how each is answered.

use axum::response::{IntoResponse, Response};
use tideway_runtime::Problem;
use tideway_store::DbError;

/// Why a payment request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter has a wrong value (400, like the query extractor's rejections).
    #[error("{param}: {reason}")]
    InvalidQuery {
        /// The parameter's name.
        param: String,
        /// Why it was refused.
        reason: String,
    },
    /// A body field has a wrong value (422 naming it).
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field's name.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// No such payment (404).
    #[error("{0}")]
    NotFound(String),
    /// The database failed: 503, 409 or an opaque 500 by its class, logged once.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl ApiError {
    /// A wrong query parameter.
    pub fn query(param: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidQuery {
            param: param.into(),
            reason: reason.into(),
        }
    }

    /// A wrong body field.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The problem document answered for this error.
    pub fn problem(&self) -> Problem {
        match self {
            Self::InvalidQuery { param, reason } => Problem::invalid_query(param, reason),
            Self::InvalidField { field, reason } => Problem::invalid_field(field, reason),
            Self::NotFound(what) => Problem::not_found(what),
            Self::Database(err) => err.problem(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(DbError::new(tideway_payment_api::SERVICE, err))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Database(err) => err.respond(),
            _ => self.problem().into_response(),
        }
    }
}
