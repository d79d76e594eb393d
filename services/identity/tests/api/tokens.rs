//! Access tokens the service must refuse, and who may read which user.

use reqwest::StatusCode;
use tideway_identity_api::{TokenResponse, UserView};
use tideway_testkit::TestTokens;

use crate::helpers::{admin_seed, assert_problem, spawn_app, spawn_with, test_config};

#[tokio::test]
async fn me_refuses_missing_garbage_expired_and_foreign_tokens() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let tokens = app.signed_up("ivy@example.com").await;
        let user: UserView = app
            .me(Some(&tokens.access_token))
            .await
            .json()
            .await
            .unwrap();
        // Each wrong in one way: expired, signed by another key, for another audience,
        // for a user that does not exist.
        let expired = app.tokens.expired(&user.id, &["customer"]);
        let foreign = TestTokens::new().token(&user.id, &["admin"]);
        let mut other_audience = TestTokens::claims(&user.id, &["customer"]);
        other_audience.aud = "billing".to_owned();
        let other_audience = app.tokens.sign(&other_audience);
        let ghost = app
            .tokens
            .token("0190a0a0-0000-7000-8000-000000000000", &["customer"]);
        let mut tampered = tokens.access_token.clone();
        tampered.pop();
        tampered.push(if tokens.access_token.ends_with('A') {
            'B'
        } else {
            'A'
        });

        let response = app.me(None).await;
        assert_problem(response, StatusCode::UNAUTHORIZED, "authorization").await;
        for token in [
            "garbage",
            "a.b.c",
            expired.as_str(),
            foreign.as_str(),
            other_audience.as_str(),
            ghost.as_str(),
            tampered.as_str(),
        ] {
            let response = app.me(Some(token)).await;
            assert!(response.headers().contains_key("www-authenticate"));
            assert_problem(response, StatusCode::UNAUTHORIZED, "authorization").await;
        }
        let response = app
            .client
            .get(app.url("/me"))
            .header("authorization", format!("Basic {}", tokens.access_token))
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::UNAUTHORIZED, "authorization").await;
        // A refresh token is not an access token.
        let response = app.me(Some(&tokens.refresh_token)).await;
        assert_problem(response, StatusCode::UNAUTHORIZED, "authorization").await;
    }
}

#[tokio::test]
async fn a_user_reads_itself_and_an_admin_reads_anyone() {
    for db in tideway_testkit::backends().await {
        let tokens = TestTokens::new();
        let mut config = test_config(db.url(), &tokens);
        config.seed_users = vec![admin_seed(&["admin"])];
        let app = spawn_with(config, tokens).await;
        let jane = app.signed_up("jane@example.com").await;
        let kim = app.signed_up("kim@example.com").await;
        let kim_view: UserView = app.me(Some(&kim.access_token)).await.json().await.unwrap();
        let path = format!("/users/{}", kim_view.id);

        let response = app.get(&path, Some(&kim.access_token)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let response = app.get(&path, Some(&jane.access_token)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = app.get(&path, None).await;
        assert_problem(response, StatusCode::UNAUTHORIZED, "authorization").await;

        let response = app.login(" admin@tideway.TEST", "admin-password-1").await;
        assert_eq!(response.status(), StatusCode::OK);
        let admin: TokenResponse = response.json().await.unwrap();
        let claims = app
            .identity
            .verifier()
            .verify(&admin.access_token)
            .await
            .unwrap();
        assert_eq!(claims.roles, ["customer", "admin"]);
        let response = app.get(&path, Some(&admin.access_token)).await;
        assert_eq!(response.json::<UserView>().await.unwrap(), kim_view);
        for unknown in ["no-such-user", "0190a0a0-0000-7000-8000-000000000000"] {
            let response = app
                .get(&format!("/users/{unknown}"), Some(&admin.access_token))
                .await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
        }
    }
}
