//! Friendly error pages: what went wrong in words, and where to go next.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use maud::html;
use tideway_runtime::client::ClientError;

use crate::{
    layout::{Section, page},
    session::Visitor,
};

/// Why a page cannot be shown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    /// Nothing there.
    #[error("{0} not found")]
    NotFound(String),
    /// The page needs a signed-in user: go and sign in, then come back to `next`.
    #[error("sign-in required")]
    SignIn { next: String },
    /// The user may not see the page.
    #[error("forbidden")]
    Forbidden,
    /// A service the page needs did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else; the cause is logged.
    #[error("internal error")]
    Internal,
}

impl PageError {
    /// A failed API call as the page's error; a 401 sends the visitor to sign in.
    pub(crate) fn from_client(err: ClientError, next: &str) -> Self {
        match &err {
            ClientError::Status { status, .. } if *status == StatusCode::NOT_FOUND => {
                Self::NotFound("the page".to_owned())
            }
            ClientError::Status { status, .. } if *status == StatusCode::UNAUTHORIZED => {
                Self::SignIn {
                    next: next.to_owned(),
                }
            }
            ClientError::Status { status, .. } if *status == StatusCode::FORBIDDEN => {
                Self::Forbidden
            }
            ClientError::Timeout { service, .. } | ClientError::Connect { service, .. } => {
                tracing::warn!(error = %err, "a page's API call failed");
                Self::Unavailable(format!("The {service} service is not answering right now."))
            }
            ClientError::Status { status, .. } if status.is_server_error() => {
                tracing::warn!(error = %err, "a page's API call failed");
                Self::Unavailable("A service behind this page is having trouble.".to_owned())
            }
            _ => {
                tracing::error!(error = %err, "a page's API call failed");
                Self::Internal
            }
        }
    }
}

/// Where to sign in and come back to `next`.
pub(crate) fn login_url(next: &str) -> String {
    let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    format!("/login?{query}")
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            Self::SignIn { next } => return Redirect::to(&login_url(next)).into_response(),
            Self::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "Not found",
                format!("We looked everywhere, but {what} is not here."),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "Not for you",
                "This page is for administrators. Sign in with an admin account to see it."
                    .to_owned(),
            ),
            Self::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Back in a moment",
                format!("{message} Please try again in a few seconds."),
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Something went wrong on our side. It has been logged; please try again."
                    .to_owned(),
            ),
        };
        let body = html! {
            section.error-page {
                p.code { (status.as_u16()) }
                h1 { (title) }
                p { (message) }
                p.actions {
                    a.button href="/" { "Go to the home page" }
                    a href="/catalog" { "Browse the shop" }
                }
            }
        };
        (
            status,
            page(title, &Visitor::default(), Section::None, body),
        )
            .into_response()
    }
}

/// The answer for a path nothing serves: a page for people, a problem document under
/// `/api/`.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") || uri.path() == "/api" {
        return tideway_runtime::Problem::not_found(format!("no endpoint at {}", uri.path()))
            .into_response();
    }
    PageError::NotFound("this page".to_owned()).into_response()
}
