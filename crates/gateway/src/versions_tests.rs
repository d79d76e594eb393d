//! The API's versions at the gateway: `/api/v1/…` is the canonical path of every route and
//! operator endpoint; the unversioned paths are deprecated aliases of it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode, Uri},
    routing::get,
};
use tideway_runtime::auth::{JwtVerifier, TokenSigner};
use tower::ServiceExt;

use super::*;

/// An upstream without the version layer: it answers the path and query it was sent
/// under `/api/v1/catalog` and nothing else, so an alias forwarded as it came would fail.
fn upstream() -> Router {
    Router::new().route(
        "/api/v1/catalog/{*rest}",
        get(|uri: Uri| async move {
            axum::Json(serde_json::json!({
                "sent": uri.path_and_query().map(|p| p.as_str().to_owned())
            }))
        }),
    )
}

fn gateway(unversioned_aliases: bool) -> (Router, TokenSigner) {
    let signer = TokenSigner::generate().unwrap();
    let verifier = Arc::new(JwtVerifier::from_keys(signer.jwks(), "tideway", "tideway"));
    let config = GatewayConfig {
        routes: vec![RouteConfig::new(
            "/api/v1/catalog",
            "catalog",
            Access::Public,
            Access::Role("admin".into()),
        )],
        unversioned_aliases,
        ..GatewayConfig::default()
    };
    let upstreams = HashMap::from([(
        "catalog".to_owned(),
        Transport::in_process("catalog", upstream(), Duration::from_secs(2)),
    )]);
    let router = Gateway::new(&config, upstreams, verifier).unwrap().router();
    (router, signer)
}

fn admin_token(signer: &TokenSigner) -> String {
    let claims = TokenSigner::claims(
        "u1",
        "admin@x.io",
        &["admin"],
        "tideway",
        "tideway",
        Duration::from_secs(60),
    );
    signer.sign(&claims).unwrap()
}

async fn get_path(
    router: &Router,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    send(router, Method::GET, path, token).await
}

async fn send(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

#[tokio::test]
async fn an_alias_is_proxied_as_its_v1_path_and_marked_deprecated() {
    let (router, _) = gateway(true);
    let (status, headers, v1) = get_path(&router, "/api/v1/catalog/items?page=2&q=tea", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v1["sent"], "/api/v1/catalog/items?page=2&q=tea");
    assert!(!headers.contains_key("deprecation"), "{headers:?}");
    assert!(!headers.contains_key("link"), "{headers:?}");

    let (status, headers, alias) = get_path(&router, "/api/catalog/items?page=2&q=tea", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(alias, v1, "the upstream got the v1 request");
    assert_eq!(headers["deprecation"], "@1796083200");
    assert_eq!(
        headers["link"],
        "</api/v1/catalog/items?page=2&q=tea>; rel=\"successor-version\""
    );
    // Access is the v1 route's: a write without a token is refused on both paths.
    let (status, headers, _) = send(&router, Method::DELETE, "/api/catalog/items/1", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["deprecation"], "@1796083200");
}

#[tokio::test]
async fn the_operator_api_is_versioned_too() {
    let (router, signer) = gateway(true);
    let token = admin_token(&signer);
    let (status, headers, v1) = get_path(&router, CONFIG_PATH, Some(&token)).await;
    assert_eq!(CONFIG_PATH, "/api/v1/admin/config");
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("deprecation"));
    let (status, headers, alias) = get_path(&router, "/api/admin/config", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(alias, v1);
    assert_eq!(headers["deprecation"], "@1796083200");
    assert_eq!(
        headers["link"],
        "</api/v1/admin/config>; rel=\"successor-version\""
    );
}

#[tokio::test]
async fn an_unknown_version_is_a_404_problem() {
    let (router, _) = gateway(true);
    let (status, headers, body) = get_path(&router, "/api/v2/catalog/items", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["status"], 404);
    assert!(!headers.contains_key("deprecation"));
}

#[tokio::test]
async fn without_aliases_an_unversioned_path_is_a_404_naming_its_successor() {
    let (router, _) = gateway(false);
    let (status, headers, body) = get_path(&router, "/api/catalog/items?page=2", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["status"], 404);
    assert_eq!(
        headers["link"],
        "</api/v1/catalog/items?page=2>; rel=\"successor-version\""
    );
    let (status, _, body) = get_path(&router, "/api/v1/catalog/items?page=2", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["sent"], "/api/v1/catalog/items?page=2");
}
