//! Caching of read endpoints, in two layers.
//!
//! * **Cache-aside** ([`Caches`]): the rendered answers of item, list, category and brand
//!   reads (body and `ETag`), kept by `tideway-cache` (memory or Redis per use, config
//!   `catalog.cache.*`). A hit costs no query, no serialisation and no hashing. Entries are
//!   invalidated by this service's own writes and stock copy, by the catalog's events
//!   (every replica subscribes on its own, so each invalidates its memory), and expire
//!   after their time to live whatever happens.
//! * **HTTP**: a strong `ETag` from the response body's hash, `Cache-Control`, and
//!   `304 Not Modified` when the client's `If-None-Match` matches. The tag is the body's
//!   SHA-256, so it changes exactly when the representation does (a price change, a new
//!   item on a page) and is the same on every replica.

use std::fmt::Write as _;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tideway_cache::{Cache, CacheError, Shared, UseConfig};

use crate::error::ApiError;

/// How long shared caches and browsers may reuse a catalog answer: 30 s fresh, then
/// answered stale for up to 30 s more while revalidated behind, and for up to 5 min when
/// the catalog fails (the gateway purges on the catalog's events well before that).
pub const CATALOG_CACHE_CONTROL: &str =
    "public, max-age=30, stale-while-revalidate=30, stale-if-error=300";

/// The cache settings of the catalog (`[catalog.cache]`): the switch and Redis settings
/// shared by every use, and one use per kind of read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// `enabled`, `redis_url`, `redis_timeout_ms`, `key_prefix`.
    #[serde(flatten)]
    pub shared: Shared,
    /// `GET /items/{id}` (and the 404 of an unknown id).
    pub item: UseConfig,
    /// `GET /items?…`, by the checked query.
    pub list: UseConfig,
    /// `GET /categories`.
    pub categories: UseConfig,
    /// `GET /brands`.
    pub brands: UseConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            shared: Shared::default(),
            item: UseConfig::memory(60_000, 10_000),
            // Lists change with any item on them: a shorter life bounds what a missed
            // event leaves.
            list: UseConfig::memory(5_000, 2_000),
            categories: UseConfig::memory(60_000, 16),
            brands: UseConfig::memory(60_000, 16),
        }
    }
}

impl CacheConfig {
    /// The first unacceptable key under `catalog.cache` and what is expected of it.
    pub fn problem(&self) -> Option<(String, String)> {
        if let Some((key, expected)) = self.shared.problem() {
            return Some((format!("catalog.cache.{key}"), expected));
        }
        for (name, config) in [
            ("item", &self.item),
            ("list", &self.list),
            ("categories", &self.categories),
            ("brands", &self.brands),
        ] {
            if let Some((key, expected)) = config.problem() {
                return Some((format!("catalog.cache.{name}.{key}"), expected));
            }
        }
        None
    }
}

/// A rendered answer: its JSON body and strong `ETag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    /// The JSON body.
    pub body: String,
    /// Its entity tag.
    pub etag: String,
}

/// The catalog's caches of rendered reads.
#[derive(Debug, Clone)]
pub struct Caches {
    /// Items by id (`None`: no such item).
    pub item: Cache<Rendered>,
    /// Pages by their checked query.
    pub list: Cache<Rendered>,
    /// The categories.
    pub categories: Cache<Rendered>,
    /// The brands.
    pub brands: Cache<Rendered>,
}

impl Caches {
    /// The caches of `config`.
    pub fn new(config: &CacheConfig) -> Result<Self, CacheError> {
        Ok(Self {
            item: Cache::new("catalog_item", &config.item, &config.shared)?,
            list: Cache::new("catalog_list", &config.list, &config.shared)?,
            categories: Cache::new("catalog_categories", &config.categories, &config.shared)?,
            brands: Cache::new("catalog_brands", &config.brands, &config.shared)?,
        })
    }

    /// Item `id` changed in what lists, categories or brands show (created, described,
    /// repriced, deleted, sold out or back): every answer that may show it goes.
    pub async fn item_changed(&self, id: &str) {
        self.item.invalidate(id).await;
        self.list.invalidate_all().await;
        self.categories.invalidate_all().await;
        self.brands.invalidate_all().await;
    }

    /// Only the stock number of item `id` changed: its own answer goes; lists keep theirs
    /// for at most their time to live.
    pub async fn stock_changed(&self, id: &str) {
        self.item.invalidate(id).await;
    }
}

/// `value` rendered: its JSON and entity tag.
pub fn render<T: Serialize>(value: &T) -> Result<Rendered, ApiError> {
    let body = serde_json::to_string(value).map_err(|err| {
        tracing::error!(error = %err, "cannot serialise a catalog answer");
        ApiError::Serialize
    })?;
    let etag = etag_of(body.as_bytes());
    Ok(Rendered { body, etag })
}

/// A rendered answer to a request with `headers`: 200 with the body, or 304 when the
/// client already has it; `ETag` and `Cache-Control` on both.
pub fn respond(
    headers: &HeaderMap,
    rendered: Rendered,
    cache_control: &'static str,
) -> Result<Response, ApiError> {
    let etag_value = HeaderValue::from_str(&rendered.etag).map_err(|_| ApiError::Serialize)?;
    let cache_value = HeaderValue::from_static(cache_control);
    if if_none_match(headers, &rendered.etag) {
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
        rendered.body,
    )
        .into_response())
}

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
    respond(headers, render(value)?, cache_control)
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
