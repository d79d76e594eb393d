//! The one error type of the catalog's handlers and how each variant is answered.

use axum::response::{IntoResponse, Response};
use tideway_runtime::Problem;
use tideway_store::DbError;

/// Why a catalog request failed.
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
    /// No such item (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the catalog (409).
    #[error("{0}")]
    Conflict(String),
    /// An answer could not be serialised (opaque 500, logged where it happened).
    #[error("cannot serialise the answer")]
    Serialize,
    /// The database failed: 503, 409 or an opaque 500 by its class, logged once.
    #[error(transparent)]
    Database(#[from] DbError),
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
            Self::Conflict(what) => Problem::conflict(what),
            Self::Database(err) => err.problem(),
            Self::Serialize => Problem::internal(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(DbError::new(tideway_catalog_api::SERVICE, err))
    }
}

impl From<tideway_bus::BusError> for ApiError {
    fn from(err: tideway_bus::BusError) -> Self {
        match err {
            tideway_bus::BusError::Db(err) => err.into(),
            other => {
                tracing::error!(error = %other, "cannot enqueue a catalog event");
                Self::Serialize
            }
        }
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
