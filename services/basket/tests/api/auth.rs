//! Every endpoint needs a valid bearer token; without one nothing changes.

use reqwest::Method;
use serde_json::json;
use tideway_testkit::TestTokens;

use crate::helpers::{COFFEE, FakeCatalog, TEA, spawn_app};

#[tokio::test]
async fn every_endpoint_refuses_missing_expired_and_forged_tokens() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let app = spawn_app(&store, fake.in_process()).await;
        let token = app.token("alice");
        app.add(&token, COFFEE, 2).await.view();
        let before = app.view(&token).await;

        let expired = app.tokens.expired("alice", &[]);
        let forged = TestTokens::new().token("alice", &[]);
        let mut other_audience = TestTokens::claims("alice", &[]);
        other_audience.aud = "elsewhere".to_owned();
        let other_audience = app.tokens.sign(&other_audience);
        // And every attack on a JWT check: alg none, HS256 with the public key, bad or
        // missing kid, wrong iss and aud, expired, nbf ahead, tampered payload and signature,
        // an opaque refresh token.
        let attacks = app.tokens.attacks("alice", &["customer", "admin"]);
        let mut tokens = vec![
            None,
            Some(expired.as_str()),
            Some("garbage"),
            Some(forged.as_str()),
            Some(other_audience.as_str()),
        ];
        tokens.extend(attacks.iter().map(|(_, token)| Some(token.as_str())));

        let add = json!({"item_id": TEA, "quantity": 1}).to_string();
        let set = json!({"quantity": 9}).to_string();
        let requests: [(Method, String, Option<String>); 5] = [
            (Method::GET, "/api/v1/basket".into(), None),
            (Method::POST, "/api/v1/basket/items".into(), Some(add)),
            (
                Method::PUT,
                format!("/api/v1/basket/items/{COFFEE}"),
                Some(set),
            ),
            (
                Method::DELETE,
                format!("/api/v1/basket/items/{COFFEE}"),
                None,
            ),
            (Method::DELETE, "/api/v1/basket".into(), None),
        ];
        for (method, path, body) in &requests {
            for bad in tokens.iter().copied() {
                let content_type = body.as_ref().map(|_| "application/json");
                let answer = app
                    .raw(method.clone(), path, bad, content_type, body.clone())
                    .await;
                assert_eq!(
                    answer.status, 401,
                    "{method} {path} with {bad:?}: {answer:?}"
                );
                assert_eq!(answer.field(), "authorization");
                assert_eq!(answer.body["type"], "/problems/unauthorized");
            }
            // A header that is not a bearer token.
            let answer = app
                .http
                .request(method.clone(), app.server.url(path))
                .header("authorization", "Basic YWxpY2U6c2VjcmV0")
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 401);
            assert!(answer.headers().contains_key("www-authenticate"));
        }
        assert_eq!(app.view(&token).await, before);
        assert_eq!(app.stored("alice").await, [(COFFEE.to_owned(), 2)]);
    }
}
