//! HTTP caching of read endpoints: a strong `ETag` from the response body's hash,
//! `Cache-Control`, and `304 Not Modified` when the client's `If-None-Match` matches.
//!
//! The tag is the body's SHA-256, so it changes exactly when the representation does
//! (a price change, a new item on a page) and is the same on every replica.

use std::fmt::Write as _;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// How long shared caches and browsers may reuse a catalog answer.
pub const CATALOG_CACHE_CONTROL: &str = "public, max-age=30";

/// The strong entity tag of `body`: `"` + 32 hex digits of its SHA-256 + `"`.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for byte in &digest[..16] {
        let _ = write!(tag, "{byte:02x}");
    }
    tag.push('"');
    tag
}

/// Whether `If-None-Match` in `headers` matches `etag` (weak comparison, as RFC 9110
/// §13.1.2 requires for this header; `*` matches any current representation).
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|candidate| {
            candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
        })
}

/// `value` as a cacheable JSON answer to a request with `headers`: 200 with the body,
/// `ETag` and `Cache-Control`, or 304 with no body when the client already has it.
pub fn cached_json<T: Serialize>(
    headers: &HeaderMap,
    value: &T,
    cache_control: &'static str,
) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|err| {
        tracing::error!(error = %err, "cannot serialise a catalog answer");
        ApiError::Serialize
    })?;
    let etag = etag_of(&body);
    let etag_value = HeaderValue::from_str(&etag).map_err(|_| ApiError::Serialize)?;
    let cache_value = HeaderValue::from_static(cache_control);
    if if_none_match(headers, &etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag_value),
                (header::CACHE_CONTROL, cache_value),
            ],
        )
            .into_response());
    }
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache_value),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_inm(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn tags_are_strong_and_depend_on_the_body() {
        let a = etag_of(b"{\"a\":1}");
        assert!(a.starts_with('"') && a.ends_with('"') && a.len() == 34);
        assert_eq!(a, etag_of(b"{\"a\":1}"));
        assert_ne!(a, etag_of(b"{\"a\":2}"));
    }

    #[test]
    fn matches_lists_weak_tags_and_star() {
        let tag = etag_of(b"x");
        assert!(if_none_match(&with_inm(&tag), &tag));
        assert!(if_none_match(
            &with_inm(&format!("\"other\", W/{tag}")),
            &tag
        ));
        assert!(if_none_match(&with_inm("*"), &tag));
        assert!(!if_none_match(&with_inm("\"other\""), &tag));
        assert!(!if_none_match(&HeaderMap::new(), &tag));
    }

    #[tokio::test]
    async fn answers_304_without_a_body() {
        let value = serde_json::json!({"a": 1});
        let first = cached_json(&HeaderMap::new(), &value, CATALOG_CACHE_CONTROL).unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert_eq!(
            first.headers()[header::CACHE_CONTROL],
            CATALOG_CACHE_CONTROL
        );
        let second = cached_json(&with_inm(&tag), &value, CATALOG_CACHE_CONTROL).unwrap();
        assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(second.headers()[header::ETAG], tag.as_str());
        let body = axum::body::to_bytes(second.into_body(), 1024)
            .await
            .unwrap();
        assert!(body.is_empty());
    }
}
