//! The one error type of the inventory's HTTP handlers and how each variant is answered.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use tideway_runtime::Problem;

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
    /// The database does not answer (503).
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else (opaque 500, logged once here).
    #[error("the database failed")]
    Database(#[source] sqlx::Error),
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
            Self::Unavailable(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_detail("the inventory is temporarily unavailable; try again shortly"),
            Self::Database(_) => Problem::internal(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if tideway_store::is_unavailable(&err) {
            Self::Unavailable(err)
        } else {
            Self::Database(err)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Database(err) => tracing::error!(error = ?err, "an inventory request failed"),
            Self::Unavailable(err) => {
                tracing::warn!(error = %err, "the inventory database is unavailable")
            }
            _ => {}
        }
        self.problem().into_response()
    }
}
