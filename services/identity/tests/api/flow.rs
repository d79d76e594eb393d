//! The whole session: register, log in, read yourself, refresh, log out.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tideway_identity::JwkSet;
use tideway_identity_api::{
    IdentityClient, LoginRequest, RegisterRequest, SERVICE, TokenResponse, UserView,
};
use tideway_runtime::{auth::JwtVerifier, client::Transport};

use crate::helpers::{PASSWORD, assert_problem, spawn_app};

#[tokio::test]
async fn register_login_me_refresh_reuse_logout() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;

        let response = app
            .register("  Alice@Example.COM ", PASSWORD, " Alice ")
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let user: UserView = response.json().await.unwrap();
        assert_eq!(user.email, "alice@example.com");
        assert_eq!(user.name, "Alice");
        assert_eq!(user.roles, ["customer"]);
        assert_eq!(location, format!("/api/v1/identity/users/{}", user.id));
        assert_eq!(user.created_at.len(), 24, "{}", user.created_at);
        let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
            .fetch_one(app.identity.db().pool())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(!hash.contains(PASSWORD));

        let response = app.login("ALICE@example.com ", PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        let first: TokenResponse = response.json().await.unwrap();
        assert_eq!(first.token_type, "Bearer");
        assert_eq!(first.expires_in, 900);
        assert_eq!(first.refresh_expires_in, 2_592_000);
        assert_eq!(first.refresh_token.len(), 43, "32 bytes in base64url");
        // Only the hash of the refresh token is stored.
        let stored: String = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
            .fetch_one(app.identity.db().pool())
            .await
            .unwrap();
        assert_eq!(stored.len(), 64);
        assert_ne!(stored, first.refresh_token);

        let response = app.me(Some(&first.access_token)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<UserView>().await.unwrap(), user);
        let response = app
            .get(
                &location["/api/v1/identity".len()..],
                Some(&first.access_token),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);

        let response = app.refresh(&first.refresh_token).await;
        assert_eq!(response.status(), StatusCode::OK);
        let second: TokenResponse = response.json().await.unwrap();
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_eq!(app.active_refresh_tokens().await, 1);
        let response = app.me(Some(&second.access_token)).await;
        assert_eq!(response.status(), StatusCode::OK);

        // The consumed refresh token is dead.
        let response = app.refresh(&first.refresh_token).await;
        assert_problem(response, StatusCode::UNAUTHORIZED, "refresh_token").await;
        assert_eq!(app.count("refresh_tokens").await, 2);

        let response = app.logout(&second.refresh_token).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.active_refresh_tokens().await, 0);
        let response = app.refresh(&second.refresh_token).await;
        assert_problem(response, StatusCode::UNAUTHORIZED, "refresh_token").await;
        // Logging out twice is harmless.
        let response = app.logout(&second.refresh_token).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
}

#[tokio::test]
async fn the_published_jwks_verifies_issued_tokens() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let tokens = app.signed_up("bob@example.com").await;

        let response = app.get("/.well-known/jwks.json", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["cache-control"], "public, max-age=300");
        let jwks: JwkSet = response.json().await.unwrap();
        assert_eq!(jwks.keys.len(), 1);
        assert_eq!(
            jwks.keys[0].common.key_id.as_deref(),
            Some(app.tokens.signer().key_id())
        );

        let verifier = JwtVerifier::from_keys(jwks, "tideway", "tideway");
        let claims = verifier.verify(&tokens.access_token).await.unwrap();
        assert_eq!(claims.email, "bob@example.com");
        assert_eq!(claims.roles, ["customer"]);
        assert_eq!(claims.exp - claims.iat, 900);
        // The in-process verifier agrees.
        let claims2 = app
            .identity
            .verifier()
            .verify(&tokens.access_token)
            .await
            .unwrap();
        assert_eq!(claims2.sub, claims.sub);
        // A verifier for another audience refuses it.
        let other = JwtVerifier::from_keys(app.identity.jwks(), "tideway", "elsewhere");
        assert!(other.verify(&tokens.access_token).await.is_err());
    }
}

#[tokio::test]
async fn duplicate_emails_conflict_whatever_their_case() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let response = app.register("carol@example.com", PASSWORD, "Carol").await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let response = app
            .register(" CAROL@example.com", "another-pass-9", "Carol Two")
            .await;
        let body = assert_problem(response, StatusCode::CONFLICT, "email").await;
        assert_eq!(body["detail"], "an account with this email already exists");
        assert_eq!(app.count("users").await, 1);
    }
}

#[tokio::test]
async fn the_typed_client_works_over_http_and_in_process() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let transports = [
            Transport::http(SERVICE, app.server.base_url(), Duration::from_secs(5)).unwrap(),
            Transport::in_process(SERVICE, app.identity.router(), Duration::from_secs(5)),
        ];
        for (i, transport) in transports.into_iter().enumerate() {
            let client = IdentityClient::new(transport);
            let email = format!("dave{i}@example.com");
            let user = client
                .register(&RegisterRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                    name: "Dave".into(),
                })
                .await
                .unwrap();
            let tokens = client
                .login(&LoginRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                })
                .await
                .unwrap();
            assert_eq!(client.me(&tokens.access_token).await.unwrap(), user);
            let next = client.refresh(&tokens.refresh_token).await.unwrap();
            let err = client.refresh(&tokens.refresh_token).await.unwrap_err();
            assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
            client.logout(&next.refresh_token).await.unwrap();
            let jwks: JwkSet = client.jwks().await.unwrap();
            assert_eq!(
                jwks.keys[0].common.key_id.as_deref(),
                Some(app.tokens.signer().key_id())
            );
            let err = client
                .login(&LoginRequest {
                    email,
                    password: "wrong-password-1".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
        }
        let health: Value = app
            .client
            .get(app.server.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["status"], "ready");
    }
}

/// Several refreshes racing with one token: one wins, and the others are reuse of a consumed
/// token, so the session ends — the winner's new token included. (The web front makes one
/// refresh per session at a time for this reason.)
#[tokio::test]
async fn racing_refreshes_with_one_token_let_one_through_then_end_the_session() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let tokens = app.signed_up("race@example.com").await;
        let token = tokens.refresh_token.as_str();
        let (a, b, c, d) = tokio::join!(
            app.refresh(token),
            app.refresh(token),
            app.refresh(token),
            app.refresh(token)
        );
        let statuses = [a.status(), b.status(), c.status(), d.status()];
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(ok, 1, "{statuses:?}");
        assert!(
            statuses
                .iter()
                .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
            "{statuses:?}"
        );
        assert_eq!(app.active_refresh_tokens().await, 0);
    }
}

#[tokio::test]
async fn racing_registrations_of_one_email_create_one_user() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let email = "same@example.com";
        let (a, b, c) = tokio::join!(
            app.register(email, PASSWORD, "N0"),
            app.register(email, PASSWORD, "N1"),
            app.register(email, PASSWORD, "N2")
        );
        let statuses = [a.status(), b.status(), c.status()];
        let created = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        let conflicts = statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count();
        assert_eq!((created, conflicts), (1, 2), "{statuses:?}");
        assert_eq!(app.count("users").await, 1);
    }
}
