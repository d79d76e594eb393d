//! Every way an identity request fails, and the problem document each becomes.
//!
//! Handlers are instrumented without `err`: a refused request (a 4xx) is not an error of
//! the service, and a 5xx is logged exactly once, here.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tideway_runtime::{Problem, auth::AuthError};
use tideway_store::DbError;

/// The error of an identity endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field has a value the rules refuse.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The email is taken.
    #[error("an account with this email already exists")]
    DuplicateEmail,
    /// Unknown email or wrong password: one message for both.
    #[error("the email or password is wrong")]
    BadCredentials,
    /// The refresh token is unknown, expired or revoked.
    #[error("the refresh token is invalid, expired or revoked")]
    BadRefreshToken,
    /// The access token's user no longer exists.
    #[error("the token's user no longer exists")]
    UnknownUser,
    /// No such user.
    #[error("no user with this id")]
    NotFound,
    /// The access token was refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The database failed: 503, 409 or an opaque 500 by its class, logged once.
    #[error(transparent)]
    Database(#[from] DbError),
    /// Password hashing is saturated (503 with `Retry-After`).
    #[error("too many sign-ins and registrations at once; try again shortly")]
    Busy,
    /// Anything else; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A field refused for `reason`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    fn unauthorized(&self, param: Option<&str>) -> Problem {
        let problem = Problem::new(StatusCode::UNAUTHORIZED)
            .with_type("/problems/unauthorized")
            .with_detail(self.to_string());
        match param {
            Some(name) => problem.with_param(name, self.to_string()),
            None => problem,
        }
    }
}

impl From<crate::password::HashError> for ApiError {
    fn from(err: crate::password::HashError) -> Self {
        match err {
            crate::password::HashError::Busy => Self::Busy,
            crate::password::HashError::Failed(err) => Self::Internal(err),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(DbError::new(tideway_identity_api::SERVICE, err))
    }
}

impl From<tideway_store::StoreError> for ApiError {
    fn from(err: tideway_store::StoreError) -> Self {
        match err {
            tideway_store::StoreError::Sqlx(err) => err.into(),
            other => Self::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            Self::Invalid { field, reason } => Problem::invalid_field(*field, reason.clone()),
            Self::DuplicateEmail => {
                Problem::conflict(self.to_string()).with_param("email", "is already registered")
            }
            // No field named: that would tell which of the two was wrong.
            Self::BadCredentials => self.unauthorized(None),
            Self::BadRefreshToken => self.unauthorized(Some("refresh_token")),
            Self::UnknownUser => self.unauthorized(Some("authorization")),
            Self::NotFound => Problem::not_found(self.to_string()),
            Self::Auth(err) => return err.clone().into_response(),
            Self::Database(err) => return err.respond(),
            Self::Busy => {
                tracing::warn!("password hashing is saturated; refusing the request");
                let mut response = Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_type("/problems/busy")
                    .with_detail(self.to_string())
                    .into_response();
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(tideway_store::RETRY_AFTER_SECONDS),
                );
                return response;
            }
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "request failed");
                Problem::internal()
            }
        };
        let mut response = problem.into_response();
        if matches!(self, Self::UnknownUser) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}
