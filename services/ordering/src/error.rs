//! The one error type of the ordering endpoints, rendered as problem documents.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use tideway_runtime::{DEPENDENCY_DOWN, auth::AuthError, client::ClientError, problem::Problem};
use tideway_store::DbError;

/// Why an ordering request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A body field or header has a wrong value (422).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// A query parameter has a wrong value (400, like the query extractor's rejections).
    #[error("{param}: {reason}")]
    InvalidQuery {
        /// The parameter.
        param: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The request conflicts with the state of things (409), naming a field.
    #[error("{field}: {reason}")]
    Conflict {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The body was refused by the JSON parser, which named the field (400/422).
    #[error("the body was refused")]
    Rejected(Box<Problem>),
    /// The body is not JSON (415).
    #[error("the body is not application/json")]
    UnsupportedMediaType,
    /// No such order, or not the caller's (404).
    #[error("{0}")]
    NotFound(String),
    /// The caller's token was refused (401).
    #[error("unauthorized")]
    Unauthorized(#[from] AuthError),
    /// The basket did not answer (503).
    #[error("the basket is unavailable")]
    BasketUnavailable(#[source] ClientError),
    /// The payment service did not vault the card (503).
    #[error("the payment service is unavailable")]
    PaymentUnavailable(#[source] ClientError),
    /// The basket could not be priced now (the catalog does not answer): 503.
    #[error("the basket's prices are not current")]
    PricesNotCurrent,
    /// Inventory cannot take a reservation now (no ready replica, or its readiness probe
    /// fails): checkout is refused before anything is placed, 503.
    #[error("the inventory is unavailable")]
    InventoryUnavailable,
    /// The database failed (500).
    #[error("database error")]
    Database(#[from] DbError),
    /// Anything else that should not happen (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 422 naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A 400 naming the query parameter `param`.
    pub fn query(param: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidQuery {
            param,
            reason: reason.into(),
        }
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

impl From<tideway_saga::SagaError> for ApiError {
    fn from(err: tideway_saga::SagaError) -> Self {
        Self::Internal(format!("saga: {err}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Unauthorized(err) = self {
            // Keeps the `WWW-Authenticate` header the auth error adds.
            return err.into_response();
        }
        let problem = match &self {
            Self::Invalid { field, reason } => {
                Problem::invalid_field(field.clone(), reason.clone())
            }
            Self::InvalidQuery { param, reason } => Problem::invalid_query(*param, reason.clone()),
            Self::Conflict { field, reason } => {
                Problem::conflict(reason.clone()).with_param(field.clone(), reason.clone())
            }
            Self::Rejected(problem) => (**problem).clone(),
            Self::UnsupportedMediaType => Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE)
                .with_type("/problems/unsupported-media-type")
                .with_detail("expected a body with Content-Type: application/json")
                .with_param("content-type", "must be application/json"),
            Self::NotFound(what) => Problem::not_found(what.clone()),
            Self::Unauthorized(err) => err.problem(),
            Self::BasketUnavailable(err) => {
                tracing::warn!(error = %err, "the basket is unavailable; refusing the checkout");
                return dependency_down(
                    "basket",
                    Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                        .with_type("/problems/dependency-unavailable")
                        .with_detail("the basket is unavailable; try again shortly"),
                );
            }
            Self::PaymentUnavailable(err) => {
                tracing::warn!(error = %err, "the payment service is unavailable; refusing the checkout");
                return dependency_down(
                    "payment",
                    Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                        .with_type("/problems/dependency-unavailable")
                        .with_detail("payments are unavailable; try again shortly"),
                );
            }
            Self::PricesNotCurrent => {
                return dependency_down(
                    "catalog",
                    Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                        .with_type("/problems/dependency-unavailable")
                        .with_detail(
                            "the catalog cannot confirm the basket's prices right now; try \
                             again shortly",
                        ),
                );
            }
            Self::InventoryUnavailable => {
                return dependency_down(
                    "inventory",
                    Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                        .with_type("/problems/dependency-unavailable")
                        .with_title("Inventory unavailable")
                        .with_detail(
                            "the inventory is unavailable, so no stock can be reserved: nothing \
                             was ordered, and checkout is refused until it is back; try again \
                             shortly",
                        ),
                );
            }
            Self::Database(err) => return err.respond(),
            Self::Internal(message) => {
                tracing::error!(error = %message, "an ordering request failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}

/// `problem` refusing for `dependency`, which is down: `Retry-After: 1` (it may be back in
/// a moment) and [`DEPENDENCY_DOWN`] naming it, so the callers' breakers, ejection and
/// retries do not count the refusal against this replica — every replica would answer it.
fn dependency_down(dependency: &'static str, problem: Problem) -> Response {
    let mut response = problem.into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    headers.insert(
        DEPENDENCY_DOWN,
        axum::http::HeaderValue::from_static(dependency),
    );
    response
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(DbError::new(tideway_ordering_api::SERVICE, err))
    }
}
