//! `spawn_app`: the identity service on a random port over a test database, and one helper
//! per endpoint.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tideway_identity::{Config, Identity, SeedUser};
use tideway_identity_api::{PREFIX, TokenResponse};
use tideway_testkit::{TestServer, TestTokens};

pub const PASSWORD: &str = "correct-horse-42";

pub struct TestApp {
    pub server: TestServer,
    pub client: reqwest::Client,
    pub identity: Identity,
    /// The service's own signing key, to mint expired or odd tokens.
    pub tokens: TestTokens,
}

/// A test configuration over `db_url` with a fixed, known signing key.
pub fn test_config(db_url: &str, tokens: &TestTokens) -> Config {
    Config {
        database_url: db_url.parse().expect("a test database URL"),
        signing_key: Some(tokens.signer().to_pkcs8_pem().into()),
        ..Config::default()
    }
}

pub fn admin_seed(roles: &[&str]) -> SeedUser {
    SeedUser {
        email: "Admin@Tideway.test".to_owned(),
        password: "admin-password-1".into(),
        name: "Admin".to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    }
}

pub async fn spawn_app(db_url: &str) -> TestApp {
    let tokens = TestTokens::new();
    let config = test_config(db_url, &tokens);
    spawn_with(config, tokens).await
}

/// The identity service built from `config`; `tokens` should hold its signing key.
pub async fn spawn_with(config: Config, tokens: TestTokens) -> TestApp {
    let identity = Identity::build(&config)
        .await
        .expect("build the identity service");
    TestApp {
        server: TestServer::start(identity.router()).await,
        client: reqwest::Client::new(),
        identity,
        tokens,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        self.server.url(&format!("{PREFIX}{path}"))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Posts raw bytes with the given content type (or none).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut request = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send().await.unwrap()
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Response {
        self.post(
            "/register",
            &json!({"email": email, "password": password, "name": name}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post("/login", &json!({"email": email, "password": password}))
            .await
    }

    /// Registers `email` and logs in, returning the tokens.
    pub async fn signed_up(&self, email: &str) -> TokenResponse {
        let response = self.register(email, PASSWORD, "Test User").await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let response = self.login(email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post("/refresh", &json!({"refresh_token": refresh_token}))
            .await
    }

    pub async fn logout(&self, refresh_token: &str) -> Response {
        self.post("/logout", &json!({"refresh_token": refresh_token}))
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub async fn me(&self, token: Option<&str>) -> Response {
        self.get("/me", token).await
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.identity.db().pool())
            .await
            .unwrap()
    }

    pub async fn active_refresh_tokens(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens WHERE revoked = 0")
            .fetch_one(self.identity.db().pool())
            .await
            .unwrap()
    }
}

/// Asserts a problem document with `status` naming `field` first, and returns it.
pub async fn assert_problem(response: Response, status: StatusCode, field: &str) -> Value {
    let actual = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(actual, status, "{body}");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert_eq!(body["invalid-params"][0]["name"], field, "{body}");
    body
}
