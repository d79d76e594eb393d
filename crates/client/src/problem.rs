//! RFC 9457 problem details: the one error shape every Tideway endpoint answers with.

use axum_core::{
    body::Body,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem document (RFC 9457): why a request was refused or failed.
///
/// As an OpenAPI response (`response = Problem` in a `#[utoipa::path]`) it is served as
/// `application/problem+json`.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, utoipa::ToResponse,
)]
#[response(
    description = "A problem document (RFC 9457)",
    content_type = "application/problem+json"
)]
pub struct Problem {
    /// A URI reference naming the problem type.
    #[serde(rename = "type", default = "about_blank")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// An explanation specific to this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The fields or parameters that were wrong, each with the reason.
    #[serde(
        rename = "invalid-params",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub invalid_params: Vec<InvalidParam>,
}

/// One wrong field or parameter of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvalidParam {
    /// The field's path (`items[0].quantity`), parameter or header name.
    pub name: String,
    /// Why it was refused.
    pub reason: String,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

impl Problem {
    /// A problem with the status's canonical reason as its title.
    pub fn new(status: StatusCode) -> Self {
        Self {
            kind: about_blank(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: None,
            invalid_params: Vec::new(),
        }
    }

    /// Sets the problem type URI (relative references such as `/problems/out-of-stock` are fine).
    #[must_use]
    pub fn with_type(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// Sets the title.
    #[must_use]
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Sets the detail.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a wrong field.
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, reason: impl Into<String>) -> Self {
        self.invalid_params.push(InvalidParam {
            name: name.into(),
            reason: reason.into(),
        });
        self
    }

    /// 422: a request whose field `name` has a wrong value.
    pub fn invalid_field(name: impl Into<String>, reason: impl Into<String>) -> Self {
        let name = name.into();
        let reason = reason.into();
        Self::new(StatusCode::UNPROCESSABLE_ENTITY)
            .with_type("/problems/validation")
            .with_title("Invalid request")
            .with_detail(format!("{name}: {reason}"))
            .with_param(name, reason)
    }

    /// 400: a query parameter `name` with a wrong value.
    pub fn invalid_query(name: impl Into<String>, reason: impl Into<String>) -> Self {
        let name = name.into();
        let reason = reason.into();
        Self::new(StatusCode::BAD_REQUEST)
            .with_type("/problems/validation")
            .with_title("Invalid query parameter")
            .with_detail(format!("{name}: {reason}"))
            .with_param(name, reason)
    }

    /// 400: a malformed request (syntax, not values).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST)
            .with_type("/problems/malformed-request")
            .with_detail(detail)
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND)
            .with_type("/problems/not-found")
            .with_detail(what)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT)
            .with_type("/problems/conflict")
            .with_detail(detail)
    }

    /// 500 with an opaque body; the cause is logged by the caller, never sent.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR)
            .with_detail("an internal error occurred; it has been logged")
    }

    /// The status as a [`StatusCode`].
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        // Serialising a struct of strings and numbers cannot fail; should it ever, the
        // status alone still says what happened.
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_problem_json_with_invalid_params() {
        let response = Problem::invalid_field("quantity", "must be at least 1").into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["status"], 422);
        assert_eq!(json["invalid-params"][0]["name"], "quantity");
        assert_eq!(json["type"], "/problems/validation");
    }
}
