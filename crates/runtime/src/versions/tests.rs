use axum::{
    body::Body,
    extract::Query,
    http::{HeaderMap, StatusCode},
    routing::get,
};
use tower::ServiceExt;

use super::*;
use crate::{
    http::{HttpOptions, Readiness, service_router},
    problem::PROBLEM_JSON,
};

/// A service with one v1 endpoint that answers its path and query, and the unversioned
/// documents beside it.
fn app(name: &'static str, aliases: Aliases) -> Router {
    let api = Router::new()
        .route(
            "/api/v1/things/{id}",
            get(
                |uri: Uri, Query(query): Query<std::collections::BTreeMap<String, String>>| async move {
                    axum::Json(serde_json::json!({ "path": uri.path(), "query": query }))
                },
            ),
        )
        .route("/api/openapi.json", get(|| async { "the document" }))
        .route("/elsewhere", get(|| async { "a page" }));
    service_router(
        name,
        api,
        Readiness::default(),
        HttpOptions {
            aliases,
            ..HttpOptions::default()
        },
    )
}

async fn get_path(router: &Router, path: &str) -> (StatusCode, HeaderMap, String) {
    let response = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[test]
fn paths_are_sorted_by_version() {
    for path in [
        "/api/v1",
        "/api/v1/",
        "/api/v1/catalog/items",
        "/api/v1/x/y",
    ] {
        assert_eq!(classify(path), PathKind::AsIs, "{path}");
    }
    for path in [
        "/",
        "/health/ready",
        "/metrics",
        "/items/1",
        "/api",
        "/api/",
        "/apiary/catalog",
        "/api/openapi.json",
        "/api/docs",
        "/api/docs/more",
    ] {
        assert_eq!(classify(path), PathKind::AsIs, "{path}");
    }
    assert_eq!(
        classify("/api/catalog/items"),
        PathKind::Alias {
            rest: "/catalog/items"
        }
    );
    assert_eq!(classify("/api/basket"), PathKind::Alias { rest: "/basket" });
    // `v` and letters is a name, not a version; `v1x` is no version either.
    assert_eq!(
        classify("/api/vouchers"),
        PathKind::Alias { rest: "/vouchers" }
    );
    assert_eq!(classify("/api/v1x/a"), PathKind::Alias { rest: "/v1x/a" });
    assert_eq!(
        classify("/api/v1catalog"),
        PathKind::Alias { rest: "/v1catalog" }
    );
    assert_eq!(
        classify("/api/v2/catalog/items"),
        PathKind::UnknownVersion("v2")
    );
    assert_eq!(classify("/api/v10"), PathKind::UnknownVersion("v10"));
    assert_eq!(classify("/api/v0/x"), PathKind::UnknownVersion("v0"));
}

#[test]
fn the_deprecation_header_is_the_date() {
    assert_eq!(DEPRECATION, format!("@{DEPRECATED_AT}"));
    // 2026-12-01T00:00:00Z: 20,788 days after the epoch.
    assert_eq!(DEPRECATED_AT, 20_788 * 86_400);
}

#[test]
fn the_successor_keeps_the_query() {
    assert_eq!(successor("/catalog/items", None), "/api/v1/catalog/items");
    assert_eq!(
        successor("/catalog/items", Some("page=2&q=a%20b")),
        "/api/v1/catalog/items?page=2&q=a%20b"
    );
}

#[tokio::test]
async fn an_alias_answers_as_its_v1_path_and_says_it_is_deprecated() {
    let router = app("versions-test", Aliases::Served);
    let (status, headers, v1) = get_path(&router, "/api/v1/things/7?page=2&q=a%20b").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("deprecation"), "{headers:?}");
    assert!(!headers.contains_key(header::LINK), "{headers:?}");

    let (status, headers, alias) = get_path(&router, "/api/things/7?page=2&q=a%20b").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(alias, v1, "the alias is the v1 request");
    assert_eq!(headers["deprecation"], "@1796083200");
    assert_eq!(
        headers[header::LINK],
        "</api/v1/things/7?page=2&q=a%20b>; rel=\"successor-version\""
    );
    assert!(headers.contains_key("x-request-id"), "the whole stack ran");
}

#[tokio::test]
async fn an_unknown_version_is_a_404_problem() {
    let router = app("versions-test", Aliases::Served);
    let (status, headers, body) = get_path(&router, "/api/v2/things/7").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
    assert!(body.contains("/api/v2/things/7"), "{body}");
    assert!(!headers.contains_key("deprecation"));
}

#[tokio::test]
async fn documents_and_other_paths_are_served_as_they_are() {
    let router = app("versions-test", Aliases::Served);
    for (path, body) in [
        ("/api/openapi.json", "the document"),
        ("/elsewhere", "a page"),
    ] {
        let (status, headers, text) = get_path(&router, path).await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, body), "{path}");
        assert!(!headers.contains_key("deprecation"), "{path}");
    }
    let (status, headers, _) = get_path(&router, "/health/live").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("deprecation"));
}

#[tokio::test]
async fn refused_aliases_find_no_route_but_name_their_successor() {
    let router = app("versions-test", Aliases::Refused);
    let (status, headers, body) = get_path(&router, "/api/things/7?page=2").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
    assert!(body.contains("/api/things/7"), "{body}");
    assert_eq!(headers["deprecation"], "@1796083200");
    assert_eq!(
        headers[header::LINK],
        "</api/v1/things/7?page=2>; rel=\"successor-version\""
    );
    let (status, _, _) = get_path(&router, "/api/v1/things/7").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn alias_requests_are_counted_per_service() {
    // A service name of its own: the recorder is the process's.
    let router = app("versions-counted", Aliases::Served);
    let line = "tideway_http_deprecated_requests_total{service=\"versions-counted\"}";
    let count = || {
        crate::metrics::render()
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    let before = count();
    get_path(&router, "/api/v1/things/1").await;
    assert_eq!(count(), before, "a v1 request is not deprecated");
    get_path(&router, "/api/things/1").await;
    get_path(&router, "/api/things/2?x=1").await;
    assert_eq!(count(), before + 2);
}
