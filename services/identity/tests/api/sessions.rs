//! Sessions: refresh tokens rotate within families, a replayed token ends its session, a
//! session ends at its absolute lifetime, a user can sign out everywhere, and a disabled
//! account can neither sign in nor refresh.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tideway_identity_api::{LOGOUT_ALL_PATH, TokenResponse};
use tideway_testkit::TestTokens;

use crate::helpers::{PASSWORD, TestApp, admin_seed, spawn_app, spawn_with, test_config};

#[expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]
async fn tokens_of(response: reqwest::Response) -> TokenResponse {
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

impl TestApp {
    #[expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]
    async fn logout_all(&self, access_token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(self.server.url(LOGOUT_ALL_PATH));
        if let Some(token) = access_token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }
}

/// r1 → r2 by a refresh; r1 again is reuse: r2 dies with it; another session lives on.
#[tokio::test]
async fn a_replayed_refresh_token_revokes_its_whole_session() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let first = app.signed_up("replay@example.com").await;
        let other = tokens_of(app.login("replay@example.com", PASSWORD).await).await;
        let second = tokens_of(app.refresh(&first.refresh_token).await).await;

        // The thief (or a stale copy) presents the consumed token.
        assert_eq!(
            app.refresh(&first.refresh_token).await.status(),
            StatusCode::UNAUTHORIZED
        );
        // The session's current token is gone with it.
        assert_eq!(
            app.refresh(&second.refresh_token).await.status(),
            StatusCode::UNAUTHORIZED
        );
        // The user's other session is untouched.
        let other_next = tokens_of(app.refresh(&other.refresh_token).await).await;
        assert_eq!(app.active_refresh_tokens().await, 1);
        assert_eq!(
            app.refresh(&other_next.refresh_token).await.status(),
            StatusCode::OK
        );
    }
}

/// However often it is refreshed, a session ends at its absolute lifetime.
#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime() {
    let lifetime = Duration::from_secs(5);
    for db in tideway_testkit::backends().await {
        let tokens = TestTokens::new();
        let mut config = test_config(db.url(), &tokens);
        config.session_lifetime_secs = lifetime.as_secs();
        let app = spawn_with(config, tokens).await;
        let login = app.signed_up("brief@example.com").await;
        assert!(login.refresh_expires_in <= lifetime.as_secs());
        let started = Instant::now();
        let mut current = login.refresh_token;
        let mut refreshes = 0;
        loop {
            let response = app.refresh(&current).await;
            if response.status() == StatusCode::UNAUTHORIZED {
                break;
            }
            let next = tokens_of(response).await;
            assert!(next.refresh_expires_in <= lifetime.as_secs(), "{next:?}");
            current = next.refresh_token;
            refreshes += 1;
            assert!(
                started.elapsed() < lifetime * 6,
                "the session outlived its lifetime"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // It was refused for its age: its family's end has passed.
        let family_end: i64 = sqlx::query_scalar("SELECT expires_at FROM refresh_families")
            .fetch_one(app.identity.db().pool())
            .await
            .unwrap();
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        assert!(now >= family_end, "refused before the session's end");
        assert!(refreshes >= 1, "the session was refreshed while it lived");
    }
}

/// Sign out everywhere ends every session of the user, and only theirs; it needs a token.
#[tokio::test]
async fn signing_out_everywhere_ends_every_session_of_the_user() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let laptop = app.signed_up("everywhere@example.com").await;
        let phone = tokens_of(app.login("everywhere@example.com", PASSWORD).await).await;
        let stranger = app.signed_up("stranger@example.com").await;

        let response = app.logout_all(None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = app.logout_all(Some(&laptop.refresh_token)).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "not a refresh token"
        );
        assert_eq!(app.active_refresh_tokens().await, 3, "nothing changed");

        let response = app.logout_all(Some(&laptop.access_token)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        for token in [&laptop.refresh_token, &phone.refresh_token] {
            assert_eq!(app.refresh(token).await.status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(
            app.refresh(&stranger.refresh_token).await.status(),
            StatusCode::OK
        );
    }
}

/// Signing out ends the session the token belongs to: the token and its successors.
#[tokio::test]
async fn a_logout_ends_its_session() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let first = app.signed_up("leaving@example.com").await;
        let second = tokens_of(app.refresh(&first.refresh_token).await).await;
        assert_eq!(
            app.logout(&first.refresh_token).await.status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            app.refresh(&second.refresh_token).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(app.active_refresh_tokens().await, 0);
    }
}

/// An account listed to disable cannot sign in and its sessions end; seeded again, it can.
#[tokio::test]
async fn a_disabled_account_can_neither_sign_in_nor_refresh() {
    for db in tideway_testkit::backends().await {
        let tokens = TestTokens::new();
        let mut config = test_config(db.url(), &tokens);
        config.seed_users = vec![admin_seed(&["admin"])];
        let app = spawn_with(config.clone(), tokens.clone()).await;
        let session = tokens_of(app.login("admin@tideway.test", "admin-password-1").await).await;

        config.seed_users.clear();
        config.disabled_users = vec!["admin@tideway.test".into()];
        let app = spawn_with(config.clone(), tokens.clone()).await;
        assert_eq!(
            app.login("admin@tideway.test", "admin-password-1")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.refresh(&session.refresh_token).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(app.active_refresh_tokens().await, 0);
        // Disabling again (every start) changes nothing.
        let app = spawn_with(config.clone(), tokens.clone()).await;
        assert_eq!(app.count("users").await, 1);

        config.disabled_users.clear();
        config.seed_users = vec![admin_seed(&["admin"])];
        let app = spawn_with(config, tokens).await;
        tokens_of(app.login("admin@tideway.test", "admin-password-1").await).await;
    }
}
