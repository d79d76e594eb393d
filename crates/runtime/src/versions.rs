//! API versions at every server's edge.
//!
//! Every public operation lives under [`PREFIX`] (`/api/v1/…`), its canonical path. The
//! unversioned paths served before (`/api/catalog/items`) stay as aliases: [`versioned`]
//! rewrites such a request to its `/api/v1` path before the router sees it, so it is
//! routed, checked, limited, cached, logged and counted as the v1 request it stands for,
//! and marks the answer as deprecated: `Deprecation` (RFC 9745) with the date the aliases
//! were deprecated, and `Link: </api/v1/…>; rel="successor-version"` naming the same
//! request's v1 path and query. A path under a version that does not exist (`/api/v2/…`)
//! reaches no route: a 404 problem like any unknown path. A few paths under `/api/`
//! describe the API rather than belong to a version — the OpenAPI document and its
//! reference page, see [`UNVERSIONED`] — and are served as they are.
//!
//! [`service_router`](crate::http::service_router) applies it to every server, the gateway
//! and each service alike, so a typed client may call either form of any server. The
//! canonical path costs a prefix comparison; only an alias allocates (its new URI and its
//! `Link`). Aliases can be switched off ([`Aliases::Refused`]): an unversioned path then
//! reaches no route (a 404 problem) and its answer still carries `Deprecation` and the
//! `Link` to its v1 path — for the time after a sunset, or to check that every client
//! moved. Either way the request passes through the server's whole stack, so it has a
//! request id, an access-log line and its metrics.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, Uri, header, uri::PathAndQuery},
    response::Response,
    routing::future::RouteFuture,
};
use futures_util::future::Either;
use tower::Service;

/// Where the API lives; every path under it (but [`UNVERSIONED`]) belongs to a version.
pub const ROOT: &str = "/api";

/// The current (and only) version's path segment.
pub const CURRENT: &str = "v1";

/// The canonical prefix of every operation: [`ROOT`] and [`CURRENT`].
pub const PREFIX: &str = "/api/v1";

/// When the unversioned aliases were deprecated: 2026-12-01T00:00:00Z, in Unix seconds.
pub const DEPRECATED_AT: u64 = 1_796_083_200;

/// The `Deprecation` header of an alias's answer: [`DEPRECATED_AT`] as an RFC 9745
/// structured-field date.
pub const DEPRECATION: &str = "@1796083200";

/// First segments under [`ROOT`] that are not versioned: documents about the API, served
/// where they are (`/api/openapi.json`, `/api/docs`).
pub const UNVERSIONED: &[&str] = &["openapi.json", "docs"];

/// The relation of a `Link` to the path that replaces a deprecated one (RFC 5829).
const SUCCESSOR: &str = "successor-version";

/// Whether unversioned paths are served as deprecated aliases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Aliases {
    /// Served as their v1 path, with `Deprecation` and `Link`.
    #[default]
    Served,
    /// Not served: they find no route (a 404 problem), with the same `Deprecation` and
    /// `Link`.
    Refused,
}

/// What a request path is to the version layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind<'a> {
    /// Served as it is: a path under the current version, outside [`ROOT`] (health,
    /// metrics, pages) or one of the [`UNVERSIONED`] documents.
    AsIs,
    /// An unversioned API path, the alias of [`PREFIX`] followed by `rest`
    /// (`/catalog/items` for `/api/catalog/items`).
    Alias {
        /// The path after [`ROOT`], starting with `/`.
        rest: &'a str,
    },
    /// A path under a version that does not exist: the version's segment (`v2`). No
    /// router has routes under it.
    UnknownVersion(&'a str),
}

/// Sorts `path` (without its query).
pub fn classify(path: &str) -> PathKind<'_> {
    // The canonical path first: one comparison on the hot path.
    if path
        .strip_prefix(PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    {
        return PathKind::AsIs;
    }
    let Some(rest) = path.strip_prefix(ROOT) else {
        return PathKind::AsIs;
    };
    let Some(tail) = rest.strip_prefix('/') else {
        // `/api` itself, or `/apiary`: not the API's.
        return PathKind::AsIs;
    };
    let segment = tail.split('/').next().unwrap_or_default();
    if segment.is_empty() || UNVERSIONED.contains(&segment) {
        PathKind::AsIs
    } else if is_version(segment) {
        PathKind::UnknownVersion(segment)
    } else {
        PathKind::Alias { rest }
    }
}

/// Whether `segment` names a version: `v` and digits.
fn is_version(segment: &str) -> bool {
    segment
        .strip_prefix('v')
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// The v1 path and query of an alias's request: [`PREFIX`], `rest`, and the query if any.
pub fn successor(rest: &str, query: Option<&str>) -> String {
    let mut path =
        String::with_capacity(PREFIX.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    path.push_str(PREFIX);
    path.push_str(rest);
    if let Some(query) = query {
        path.push('?');
        path.push_str(query);
    }
    path
}

/// Serves `router` with versions as the module says: the alias of a v1 path is rewritten
/// before routing (or left to find no route, by `aliases`) and marked deprecated. Alias
/// requests are counted in `tideway_http_deprecated_requests_total{service}`, so operators
/// see who has not moved.
pub fn versioned(service: &'static str, router: Router, aliases: Aliases) -> Router {
    // The recorder first, so the counter is a live one.
    crate::metrics::prometheus();
    let deprecated = metrics::counter!(
        "tideway_http_deprecated_requests_total",
        "service" => service,
    );
    Router::new().fallback_service(Versioned {
        inner: router,
        aliases,
        deprecated,
    })
}

/// The service [`versioned`] wraps a router in: it must see the path before the router
/// routes it, which a `Router::layer` cannot (its layers run after routing).
#[derive(Clone)]
struct Versioned {
    inner: Router,
    aliases: Aliases,
    deprecated: metrics::Counter,
}

type AliasFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service<Request> for Versioned {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<RouteFuture<Infallible>, AliasFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let successor = match classify(request.uri().path()) {
            // An unknown version reaches the router unchanged, which has no route for it:
            // a 404 problem, logged and counted like any other.
            PathKind::AsIs | PathKind::UnknownVersion(_) => {
                return Either::Left(self.inner.call(request));
            }
            PathKind::Alias { rest } => successor(rest, request.uri().query()),
        };
        self.deprecated.increment(1);
        let link = HeaderValue::from_str(&format!("<{successor}>; rel=\"{SUCCESSOR}\"")).ok();
        if self.aliases == Aliases::Served {
            // The URI was valid and only gains a prefix, so it stays valid; were it not,
            // the request would go on unchanged and find no route.
            if let Some(uri) = rewrite(request.uri(), successor) {
                *request.uri_mut() = uri;
            }
        }
        let answer = self.inner.call(request);
        Either::Right(Box::pin(async move {
            let mut response = answer.await?;
            mark_deprecated(&mut response, link);
            Ok(response)
        }))
    }
}

/// `uri` with `path` (and query) in place of its own.
fn rewrite(uri: &Uri, path: String) -> Option<Uri> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path).ok()?);
    Uri::from_parts(parts).ok()
}

/// Adds `Deprecation` and the successor's `Link` to an alias's answer.
fn mark_deprecated(response: &mut Response, link: Option<HeaderValue>) {
    let headers = response.headers_mut();
    headers.insert("deprecation", HeaderValue::from_static(DEPRECATION));
    if let Some(link) = link {
        headers.append(header::LINK, link);
    }
}

#[cfg(test)]
mod tests;
