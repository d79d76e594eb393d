//! Access tokens the service must refuse, and who may read which user.

use std::time::Duration;

use reqwest::StatusCode;
use tideway_identity_api::{TokenResponse, UserView};
use tideway_runtime::auth::TokenSigner;

use crate::helpers::{admin_seed, assert_problem, spawn_app, spawn_with, test_config};

#[tokio::test]
async fn me_refuses_missing_garbage_expired_and_foreign_tokens() {
    for db in tideway_store::testing::backends().await {
        let app = spawn_app(db.url()).await;
        let tokens = app.signed_up("ivy@example.com").await;
        let user: UserView = app
            .me(Some(&tokens.access_token))
            .await
            .json()
            .await
            .unwrap();
        let ttl = Duration::from_secs(60);

        let mut expired = TokenSigner::claims(
            &user.id,
            &user.email,
            &["customer"],
            "tideway",
            "tideway",
            ttl,
        );
        expired.iat -= 7200;
        expired.exp -= 3600;
        let expired = app.signer.sign(&expired).unwrap();
        let foreign = TokenSigner::generate()
            .unwrap()
            .sign(&TokenSigner::claims(
                &user.id,
                &user.email,
                &["admin"],
                "tideway",
                "tideway",
                ttl,
            ))
            .unwrap();
        let other_audience = app
            .signer
            .sign(&TokenSigner::claims(
                &user.id,
                &user.email,
                &["customer"],
                "tideway",
                "billing",
                ttl,
            ))
            .unwrap();
        let ghost = app
            .signer
            .sign(&TokenSigner::claims(
                "0190a0a0-0000-7000-8000-000000000000",
                "ghost@example.com",
                &["customer"],
                "tideway",
                "tideway",
                ttl,
            ))
            .unwrap();
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
    for db in tideway_store::testing::backends().await {
        let signer = TokenSigner::generate().unwrap();
        let mut config = test_config(db.url(), &signer);
        config.seed_users = vec![admin_seed(&["admin"])];
        let app = spawn_with(config, signer).await;
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
