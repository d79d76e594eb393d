//! The gateway as a shared HTTP cache, per route (`cache_bytes` in the route's config): a
//! subset of RFC 9111.
//!
//! * **Stored**: `200` answers to `GET` (and served to `GET` and `HEAD`) whose `Cache-Control` gives a freshness
//!   lifetime (`s-maxage`, else `max-age`) and says neither `no-store` nor `private`, with
//!   no `Set-Cookie`, `Vary` not `*`, and a known length within [`MAX_ENTRY_BYTES`]. An
//!   answer to a request with credentials (`Authorization`, `Cookie`) is stored, and a
//!   stored one served to such a request, only when the upstream marked it `public`.
//! * **Keyed** by path and query, and matched on the request headers the answer's `Vary`
//!   names (a different value is a miss that replaces the entry).
//! * **Fresh** (age under the lifetime): answered from memory, `X-Cache: HIT`, with `Age`;
//!   a client's matching `If-None-Match` gets `304`. A request's `Cache-Control: no-cache`
//!   (or `max-age=0`) makes the gateway revalidate first.
//! * **Stale within `stale-while-revalidate`**: answered at once, `X-Cache: STALE`, while
//!   one background request revalidates it.
//! * **Stale past that**: revalidated with `If-None-Match` (the stored `ETag`): `304`
//!   refreshes the entry (`HIT`); a new answer replaces it (`MISS`); a failure or a `5xx`
//!   within `stale-if-error` is answered with the stored answer (`STALE`, with `Age`).
//! * **Bounded**: each route's entries weigh their body plus headers and stay under its
//!   `cache_bytes` (least recently used go first).
//! * **Purged** by [`Purger::purge`]: the owner calls it on the upstream's change events.
//!
//! Metric: `tideway_gateway_cache_total{route, result}` (`hit`, `miss`, `stale`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use http_body::Body as _;
use metrics::Counter;
use tideway_runtime::client::Transport;

/// The largest answer one entry may hold.
pub const MAX_ENTRY_BYTES: u64 = 1024 * 1024;
/// What an entry weighs besides its body (headers, bookkeeping), roughly.
const ENTRY_OVERHEAD: u64 = 512;

/// `X-Cache`.
pub const X_CACHE: &str = "x-cache";

/// One route's cache.
#[derive(Clone)]
pub(crate) struct RouteCache {
    store: moka::future::Cache<String, Arc<Stored>>,
    hit: Counter,
    miss: Counter,
    stale: Counter,
}

/// A stored answer.
#[derive(Debug)]
struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    etag: Option<HeaderValue>,
    /// The request's values of the headers `Vary` names.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
    public: bool,
    stored_at: Instant,
    fresh_for: Duration,
    while_revalidate: Duration,
    if_error: Duration,
}

/// What an answer's `Cache-Control` allows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Directives {
    public: bool,
    private: bool,
    no_store: bool,
    no_cache: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    while_revalidate: u64,
    if_error: u64,
}

impl Directives {
    fn parse(headers: &HeaderMap) -> Self {
        let mut directives = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for part in value.split(',') {
                let part = part.trim().to_ascii_lowercase();
                let (name, argument) = match part.split_once('=') {
                    Some((name, argument)) => (
                        name.trim().to_owned(),
                        Some(argument.trim().trim_matches('"').to_owned()),
                    ),
                    None => (part.clone(), None),
                };
                let seconds = argument.as_deref().and_then(|a| a.parse::<u64>().ok());
                match name.as_str() {
                    "public" => directives.public = true,
                    "private" => directives.private = true,
                    "no-store" => directives.no_store = true,
                    "no-cache" => directives.no_cache = true,
                    "max-age" => directives.max_age = seconds,
                    "s-maxage" => directives.s_maxage = seconds,
                    "stale-while-revalidate" => directives.while_revalidate = seconds.unwrap_or(0),
                    "stale-if-error" => directives.if_error = seconds.unwrap_or(0),
                    _ => {}
                }
            }
        }
        directives
    }

    /// The freshness lifetime a shared cache may use, if the answer may be stored.
    fn lifetime(&self) -> Option<Duration> {
        if self.no_store || self.private || self.no_cache {
            return None;
        }
        self.s_maxage.or(self.max_age).map(Duration::from_secs)
    }
}

impl Stored {
    fn age(&self) -> Duration {
        self.stored_at.elapsed()
    }

    fn vary_matches(&self, request: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| request.get(name) == value.as_ref())
    }

    /// The stored answer to a request with `request` headers, marked `result`.
    fn respond(&self, method: &Method, request: &HeaderMap, result: &'static str) -> Response {
        let age = self.age().as_secs();
        if let Some(etag) = &self.etag
            && if_none_match(request, etag)
        {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            for name in [header::ETAG, header::CACHE_CONTROL, header::VARY] {
                if let Some(value) = self.headers.get(&name) {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            mark(&mut response, result, Some(age));
            return response;
        }
        let body = if *method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(self.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        mark(&mut response, result, Some(age));
        response
    }

    /// The same answer, fresh again (after a `304` from the upstream).
    fn refreshed(&self, headers: &HeaderMap) -> Self {
        let directives = Directives::parse(headers);
        let mut stored_headers = self.headers.clone();
        for name in [header::CACHE_CONTROL, header::EXPIRES, header::DATE] {
            if let Some(value) = headers.get(&name) {
                stored_headers.insert(name, value.clone());
            }
        }
        Self {
            status: self.status,
            headers: stored_headers,
            body: self.body.clone(),
            etag: self.etag.clone(),
            vary: self.vary.clone(),
            public: self.public || directives.public,
            stored_at: Instant::now(),
            fresh_for: directives.lifetime().unwrap_or(self.fresh_for),
            while_revalidate: Duration::from_secs(directives.while_revalidate),
            if_error: Duration::from_secs(directives.if_error),
        }
    }
}

/// Sets `X-Cache` and `Age`.
fn mark(response: &mut Response, result: &'static str, age: Option<u64>) {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(result));
    if let Some(age) = age {
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(age));
    }
}

fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    let bare = etag.strip_prefix("W/").unwrap_or(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|candidate| {
            candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == bare
        })
}

/// Whether a request carries credentials.
fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE)
}

fn key(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned())
}

/// What the cache does with a request.
pub(crate) enum Plan {
    /// Answer this.
    Answer(Response),
    /// Forward the request (with these headers changed), then [`RouteCache::complete`].
    Forward(Pending),
}

/// A forwarded request the cache waits for.
pub(crate) struct Pending {
    key: String,
    method: Method,
    request_headers: HeaderMap,
    credentials: bool,
    stale: Option<Arc<Stored>>,
}

impl RouteCache {
    /// A cache of at most `bytes` for the route `prefix`.
    pub(crate) fn new(prefix: &str, bytes: u64) -> Self {
        let store = moka::future::Cache::builder()
            .max_capacity(bytes)
            .weigher(|_key: &String, stored: &Arc<Stored>| {
                u32::try_from(stored.body.len() as u64 + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .build();
        let counter = |result: &'static str| metrics::counter!("tideway_gateway_cache_total", "route" => prefix.to_owned(), "result" => result);
        Self {
            store,
            hit: counter("hit"),
            miss: counter("miss"),
            stale: counter("stale"),
        }
    }

    /// Removes every entry.
    pub(crate) fn purge(&self) {
        self.store.invalidate_all();
    }

    /// What to do with `request` (a `GET` or `HEAD`): answer from the cache, or forward it
    /// (for a stale entry, made conditional on the stored `ETag`). `upstream` and
    /// `timeout` serve a background revalidation.
    pub(crate) async fn plan(
        &self,
        request: &mut Request,
        upstream: &Transport,
        timeout: Duration,
    ) -> Plan {
        let key = key(request.uri());
        let method = request.method().clone();
        let credentials = has_credentials(request.headers());
        let request_headers = request.headers().clone();
        let found = self
            .store
            .get(&key)
            .await
            .filter(|stored| stored.vary_matches(request.headers()))
            .filter(|stored| !credentials || stored.public);
        let Some(stored) = found else {
            return Plan::Forward(Pending {
                key,
                method,
                request_headers,
                credentials,
                stale: None,
            });
        };
        let age = stored.age();
        // The client asks for a revalidated answer (`no-cache` or `max-age=0`).
        let asked = Directives::parse(&request_headers);
        let revalidate = asked.no_cache || asked.max_age == Some(0);
        if !revalidate && age < stored.fresh_for {
            self.hit.increment(1);
            return Plan::Answer(stored.respond(&method, &request_headers, "HIT"));
        }
        if !revalidate && age < stored.fresh_for + stored.while_revalidate {
            self.stale.increment(1);
            self.revalidate_in_background(key, stored.clone(), upstream.clone(), timeout);
            return Plan::Answer(stored.respond(&method, &request_headers, "STALE"));
        }
        // Revalidate now: ask for the answer only if it changed.
        if let Some(etag) = &stored.etag {
            request
                .headers_mut()
                .insert(header::IF_NONE_MATCH, etag.clone());
        }
        Plan::Forward(Pending {
            key,
            method,
            request_headers,
            credentials,
            stale: Some(stored),
        })
    }

    fn revalidate_in_background(
        &self,
        key: String,
        stored: Arc<Stored>,
        upstream: Transport,
        timeout: Duration,
    ) {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut builder = Request::get(key.as_str());
            if let Some(etag) = &stored.etag {
                builder = builder.header(header::IF_NONE_MATCH, etag.clone());
            }
            let Ok(request) = builder.body(Body::empty()) else {
                return;
            };
            match upstream.send_with_timeout(request, timeout).await {
                Ok(response) if response.status() == StatusCode::NOT_MODIFIED => {
                    cache
                        .store
                        .insert(key, Arc::new(stored.refreshed(response.headers())))
                        .await;
                }
                Ok(response) if response.status().is_success() => {
                    let pending = Pending {
                        key,
                        method: Method::GET,
                        request_headers: HeaderMap::new(),
                        credentials: false,
                        stale: None,
                    };
                    let _ = cache.store_answer(&pending, response).await;
                }
                Ok(_) | Err(_) => {
                    tracing::debug!(key, "background revalidation failed; the entry ages on");
                }
            }
        });
    }

    /// The answer to a forwarded request: stored when it may be, the stale entry when the
    /// upstream failed within `stale-if-error`; `None` when the failure is to be answered
    /// as usual.
    pub(crate) async fn complete(
        &self,
        pending: Pending,
        upstream: Result<Response, ()>,
    ) -> Result<Response, Option<Response>> {
        match upstream {
            Ok(response) if response.status() == StatusCode::NOT_MODIFIED => {
                if let Some(stale) = &pending.stale {
                    let refreshed = Arc::new(stale.refreshed(response.headers()));
                    self.store
                        .insert(pending.key.clone(), refreshed.clone())
                        .await;
                    self.hit.increment(1);
                    return Ok(refreshed.respond(&pending.method, &pending.request_headers, "HIT"));
                }
                // The client's own conditional request: passed through.
                let mut response = response;
                self.miss.increment(1);
                mark(&mut response, "MISS", None);
                Ok(response)
            }
            Ok(response) if response.status().is_server_error() => {
                match self.serve_stale(&pending) {
                    Some(stale) => Ok(stale),
                    None => {
                        let mut response = response;
                        mark(&mut response, "MISS", None);
                        Ok(response)
                    }
                }
            }
            Ok(response) => {
                self.miss.increment(1);
                let mut response = self.store_answer(&pending, response).await;
                mark(&mut response, "MISS", None);
                Ok(response)
            }
            Err(()) => Err(self.serve_stale(&pending)),
        }
    }

    fn serve_stale(&self, pending: &Pending) -> Option<Response> {
        let stale = pending.stale.as_ref()?;
        if stale.age() >= stale.fresh_for + stale.if_error {
            return None;
        }
        self.stale.increment(1);
        Some(stale.respond(&pending.method, &pending.request_headers, "STALE"))
    }

    /// Stores `response` when it may be, and answers it (its body read into memory then).
    async fn store_answer(&self, pending: &Pending, response: Response) -> Response {
        let directives = Directives::parse(response.headers());
        let Some(lifetime) = directives.lifetime() else {
            return response;
        };
        let vary_names: Vec<HeaderName> = response
            .headers()
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        let vary_star = response.headers().get_all(header::VARY).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|n| n.trim() == "*"))
        });
        // A HEAD answer has no body to store: only GETs fill the cache (HEADs read it).
        let storable = pending.method == Method::GET
            && response.status() == StatusCode::OK
            && !response.headers().contains_key(header::SET_COOKIE)
            && !vary_star
            && (!pending.credentials || directives.public)
            && response
                .body()
                .size_hint()
                .exact()
                .is_some_and(|len| len <= MAX_ENTRY_BYTES);
        if !storable {
            return response;
        }
        let (parts, body) = response.into_parts();
        let Ok(bytes) =
            axum::body::to_bytes(body, usize::try_from(MAX_ENTRY_BYTES).unwrap_or(usize::MAX))
                .await
        else {
            // The body failed while being read: nothing can be answered from it.
            return StatusCode::BAD_GATEWAY.into_response();
        };
        let vary = vary_names
            .into_iter()
            .map(|name| {
                let value = pending.request_headers.get(&name).cloned();
                (name, value)
            })
            .collect();
        let stored = Stored {
            status: parts.status,
            etag: parts.headers.get(header::ETAG).cloned(),
            headers: parts.headers.clone(),
            body: bytes.clone(),
            vary,
            public: directives.public,
            stored_at: Instant::now(),
            fresh_for: lifetime,
            while_revalidate: Duration::from_secs(directives.while_revalidate),
            if_error: Duration::from_secs(directives.if_error),
        };
        self.store
            .insert(pending.key.clone(), Arc::new(stored))
            .await;
        let body = if pending.method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(bytes)
        };
        Response::from_parts(parts, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cache_control: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_str(cache_control).unwrap_or(HeaderValue::from_static("")),
        );
        headers
    }

    #[test]
    fn directives_give_a_shared_lifetime_only_when_storable() {
        let d = Directives::parse(&headers(
            "public, max-age=30, stale-while-revalidate=5, stale-if-error=300",
        ));
        assert_eq!(d.lifetime(), Some(Duration::from_secs(30)));
        assert!(d.public);
        assert_eq!((d.while_revalidate, d.if_error), (5, 300));
        let d = Directives::parse(&headers("max-age=30, s-maxage=10"));
        assert_eq!(d.lifetime(), Some(Duration::from_secs(10)));
        for refused in [
            "private, max-age=30",
            "no-store",
            "public",
            "no-cache, max-age=9",
        ] {
            assert_eq!(
                Directives::parse(&headers(refused)).lifetime(),
                None,
                "{refused}"
            );
        }
    }
}
