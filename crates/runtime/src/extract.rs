//! Extractors whose rejections are problem documents naming the wrong field.
//!
//! axum's own extractors answer with plain-text rejections; ours parse with
//! `serde_path_to_error` so a wrong type deep in a body is reported as
//! `items[2].quantity`, not as a line and column.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::problem::Problem;

/// A JSON body. As an extractor it requires `Content-Type: application/json` and reports
/// the failing field; as a response it is plain JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// Query parameters, parsed with the failing parameter named.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

/// Path parameters, parsed with the failing parameter named.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

/// Parses a JSON document, naming the field that failed.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_problem)?;
    de.end().map_err(|err| {
        Problem::bad_request(format!("malformed JSON: {err}")).with_param("body", err.to_string())
    })?;
    Ok(value)
}

fn json_problem(err: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let path = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            Problem::bad_request(format!("malformed JSON: {inner}"))
                .with_param("body", inner.to_string())
        }
        serde_json::error::Category::Data | serde_json::error::Category::Io => {
            let message = strip_position(&inner.to_string());
            Problem::invalid_field(field_name(&path, &message), message)
        }
    }
}

/// serde reports a missing field against its parent; name the field itself.
fn field_name(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, missing) {
        (".", Some(field)) => field.to_owned(),
        (parent, Some(field)) => format!("{parent}.{field}"),
        (".", None) => "body".to_owned(),
        (path, None) => path.to_owned(),
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn is_json_content_type(parts: &http::HeaderMap) -> bool {
    let Some(value) = parts
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE)
                .with_type("/problems/unsupported-media-type")
                .with_detail("expected a body with Content-Type: application/json")
                .with_param("content-type", "must be application/json"));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_problem)?;
        parse_json(&bytes).map(Json)
    }
}

fn bytes_problem(rejection: BytesRejection) -> Problem {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(status)
            .with_type("/problems/body-too-large")
            .with_detail("the request body is larger than this endpoint accepts")
            .with_param("body", "too large")
    } else {
        Problem::new(status).with_detail(rejection.body_text())
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|err| {
                let path = err.path().to_string();
                let message = err.into_inner().to_string();
                let name = field_name(&path, &message);
                let name = if name == "body" {
                    "query".to_owned()
                } else {
                    name
                };
                Problem::invalid_query(name, message)
            })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(err)) => {
                let kind = err.into_kind();
                let name = match &kind {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::DeserializeError { key, .. } => key.clone(),
                    _ => "path".to_owned(),
                };
                Err(Problem::new(StatusCode::BAD_REQUEST)
                    .with_type("/problems/validation")
                    .with_title("Invalid path parameter")
                    .with_detail(kind.to_string())
                    .with_param(name, kind.to_string()))
            }
            Err(other) => Err(Problem::new(other.status()).with_detail(other.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Line {
        item_id: String,
        quantity: i64,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Order {
        lines: Vec<Line>,
    }

    #[test]
    fn names_a_wrong_type_deep_in_the_body() {
        let err =
            parse_json::<Order>(br#"{"lines":[{"item_id":"a","quantity":"x"}]}"#).unwrap_err();
        assert_eq!(err.status, 422);
        assert_eq!(err.invalid_params[0].name, "lines[0].quantity");
    }

    #[test]
    fn names_a_missing_field() {
        let err = parse_json::<Order>(br#"{"lines":[{"item_id":"a"}]}"#).unwrap_err();
        assert_eq!(err.invalid_params[0].name, "lines[0].quantity");
        let err = parse_json::<Line>(br#"{"quantity":1}"#).unwrap_err();
        assert_eq!(err.invalid_params[0].name, "item_id");
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let err = parse_json::<Line>(br#"{"quantity":"#).unwrap_err();
        assert_eq!(err.status, 400);
        let err = parse_json::<Line>(br#"{"item_id":"a","quantity":1} trailing"#).unwrap_err();
        assert_eq!(err.status, 400);
    }
}
