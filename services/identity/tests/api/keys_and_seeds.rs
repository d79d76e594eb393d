//! The signing key survives restarts through its file; seed users are idempotent.

use reqwest::StatusCode;
use tideway_identity::{Config, Identity};
use tideway_identity_api::UserView;
use tideway_runtime::auth::{JwtVerifier, TokenSigner};
use tideway_testkit::TestTokens;

use crate::helpers::{admin_seed, spawn_with, test_config};

fn key_id(identity: &Identity) -> String {
    identity.jwks().keys[0]
        .common
        .key_id
        .clone()
        .expect("the key has an id")
}

#[tokio::test]
async fn a_generated_key_is_persisted_and_reused() {
    for db in tideway_testkit::backends().await {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/identity-key.pem");
        let config = Config {
            database_url: db.url().parse().expect("a test database URL"),
            signing_key_file: Some(path.clone()),
            ..Config::default()
        };
        let first = Identity::build(&config).await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let second = Identity::build(&config).await.unwrap();
        assert_eq!(key_id(&first), key_id(&second));
        let pem = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            TokenSigner::from_pkcs8_pem(&pem).unwrap().key_id(),
            key_id(&first)
        );
        // The key never shows in the service's Debug output.
        let debug = format!("{first:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");

        // A token issued before the "restart" verifies after it.
        let tokens = TestTokens::from_signer(TokenSigner::from_pkcs8_pem(&pem).unwrap());
        let app = spawn_with(config.clone(), tokens).await;
        let tokens = app.signed_up("lena@example.com").await;
        let verifier = JwtVerifier::from_keys(second.jwks(), "tideway", "tideway");
        assert!(verifier.verify(&tokens.access_token).await.is_ok());
    }
}

#[tokio::test]
async fn without_a_key_or_permission_to_generate_one_build_fails() {
    let db = tideway_testkit::sqlite().await;
    let config = Config {
        database_url: db.url().parse().expect("a test database URL"),
        generate_signing_key: false,
        ..Config::default()
    };
    let err = format!("{:#}", Identity::build(&config).await.unwrap_err());
    assert!(err.contains("identity.signing_key"), "{err}");
}

#[tokio::test]
async fn seed_users_are_created_once_and_follow_the_configuration() {
    for db in tideway_testkit::backends().await {
        let tokens = TestTokens::new();
        let mut config = test_config(db.url(), &tokens);
        config.seed_users = vec![admin_seed(&["admin"])];
        Identity::build(&config).await.unwrap();
        Identity::build(&config).await.unwrap();
        let app = spawn_with(config.clone(), tokens.clone()).await;
        assert_eq!(app.count("users").await, 1);
        let roles: String = sqlx::query_scalar("SELECT roles FROM users")
            .fetch_one(app.identity.db().pool())
            .await
            .unwrap();
        assert_eq!(roles, "customer,admin");

        // Roles, name and password follow the configuration on the next start.
        let mut changed = admin_seed(&["admin", "ops"]);
        changed.name = "Chief".into();
        changed.password = "new-admin-password-2".into();
        config.seed_users = vec![changed];
        let app = spawn_with(config, tokens).await;
        assert_eq!(app.count("users").await, 1);
        assert_eq!(
            app.login("admin@tideway.test", "admin-password-1")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        let response = app
            .login("admin@tideway.test", "new-admin-password-2")
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let tokens: tideway_identity_api::TokenResponse = response.json().await.unwrap();
        let me: UserView = app
            .me(Some(&tokens.access_token))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(me.name, "Chief");
        assert_eq!(me.roles, ["customer", "admin", "ops"]);
    }
}
