//! Every refused input: the status, the named field, and nothing written.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, assert_problem, spawn_app};

fn register_body(email: Value, password: Value, name: Value) -> Value {
    json!({"email": email, "password": password, "name": name})
}

#[tokio::test]
async fn registration_refuses_each_broken_rule_and_creates_nobody() {
    let ok_email = json!("erin@example.com");
    let ok_password = json!(PASSWORD);
    let ok_name = json!("Erin");
    let long_email = format!("{}@example.com", "a".repeat(243));
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "empty email",
            register_body(json!(""), ok_password.clone(), ok_name.clone()),
            "email",
        ),
        (
            "blank email",
            register_body(json!("   "), ok_password.clone(), ok_name.clone()),
            "email",
        ),
        (
            "no @",
            register_body(
                json!("erin.example.com"),
                ok_password.clone(),
                ok_name.clone(),
            ),
            "email",
        ),
        (
            "two @",
            register_body(
                json!("erin@x@example.com"),
                ok_password.clone(),
                ok_name.clone(),
            ),
            "email",
        ),
        (
            "empty local part",
            register_body(json!("@example.com"), ok_password.clone(), ok_name.clone()),
            "email",
        ),
        (
            "domain without a dot",
            register_body(
                json!("erin@localhost"),
                ok_password.clone(),
                ok_name.clone(),
            ),
            "email",
        ),
        (
            "empty domain label",
            register_body(
                json!("erin@example..com"),
                ok_password.clone(),
                ok_name.clone(),
            ),
            "email",
        ),
        (
            "space inside",
            register_body(
                json!("er in@example.com"),
                ok_password.clone(),
                ok_name.clone(),
            ),
            "email",
        ),
        (
            "email over 254",
            register_body(json!(long_email), ok_password.clone(), ok_name.clone()),
            "email",
        ),
        (
            "password of 9",
            register_body(ok_email.clone(), json!("abcdefgh1"), ok_name.clone()),
            "password",
        ),
        (
            "password of 129",
            register_body(
                ok_email.clone(),
                json!(format!("a1{}", "b".repeat(127))),
                ok_name.clone(),
            ),
            "password",
        ),
        (
            "password without a digit",
            register_body(ok_email.clone(), json!("abcdefghijkl"), ok_name.clone()),
            "password",
        ),
        (
            "password without a letter",
            register_body(ok_email.clone(), json!("123456789012"), ok_name.clone()),
            "password",
        ),
        (
            "password is the email",
            register_body(
                json!("erin1@example.com"),
                json!("ERIN1@example.com"),
                ok_name.clone(),
            ),
            "password",
        ),
        (
            "empty name",
            register_body(ok_email.clone(), ok_password.clone(), json!("")),
            "name",
        ),
        (
            "blank name",
            register_body(ok_email.clone(), ok_password.clone(), json!("   ")),
            "name",
        ),
        (
            "name over 80",
            register_body(ok_email.clone(), ok_password.clone(), json!("n".repeat(81))),
            "name",
        ),
        (
            "email a number",
            register_body(json!(42), ok_password.clone(), ok_name.clone()),
            "email",
        ),
        (
            "password a bool",
            register_body(ok_email.clone(), json!(true), ok_name.clone()),
            "password",
        ),
        (
            "name an array",
            register_body(ok_email.clone(), ok_password.clone(), json!(["x"])),
            "name",
        ),
        (
            "null email",
            register_body(Value::Null, ok_password.clone(), ok_name.clone()),
            "email",
        ),
        (
            "missing email",
            json!({"password": PASSWORD, "name": "Erin"}),
            "email",
        ),
        (
            "missing password",
            json!({"email": "erin@example.com", "name": "Erin"}),
            "password",
        ),
        (
            "missing name",
            json!({"email": "erin@example.com", "password": PASSWORD}),
            "name",
        ),
        ("not an object", json!(["erin@example.com"]), "body"),
    ];
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        for (what, body, field) in &cases {
            let response = app.post("/register", body).await;
            let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, field).await;
            assert!(problem["detail"].is_string(), "{what}: {problem}");
        }
        assert_eq!(app.count("users").await, 0);
        // The boundaries themselves are accepted.
        let response = app
            .post(
                "/register",
                &register_body(
                    json!(format!("{}@example.com", "a".repeat(242))),
                    json!(format!("a1{}", "b".repeat(126))),
                    json!("n".repeat(80)),
                ),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(app.count("users").await, 1);
    }
}

/// Syntax and framing errors, for every endpoint with a body.
#[tokio::test]
async fn malformed_bodies_are_refused_on_every_endpoint() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let tokens = app.signed_up("frank@example.com").await;
        let (users, refresh_tokens) = (app.count("users").await, app.count("refresh_tokens").await);
        for path in ["/register", "/login", "/refresh", "/logout"] {
            let response = app
                .post_raw(path, Some("application/json"), r#"{"email": "#)
                .await;
            assert_problem(response, StatusCode::BAD_REQUEST, "body").await;
            let response = app
                .post_raw(path, Some("application/json"), r#"{} trailing"#)
                .await;
            assert_eq!(response.status().as_u16() / 100, 4, "{path}");
            let response = app
                .post_raw(path, Some("text/plain"), r#"{"refresh_token": "x"}"#)
                .await;
            assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type").await;
            let response = app.post_raw(path, None, "{}").await;
            assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type").await;
            let huge = format!(r#"{{"email": "{}"}}"#, "x".repeat(20 * 1024));
            let response = app.post_raw(path, Some("application/json"), huge).await;
            assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "body").await;
            let response = app.client.get(app.url(path)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        }
        assert_eq!(app.count("users").await, users);
        assert_eq!(app.count("refresh_tokens").await, refresh_tokens);
        // Still usable afterwards.
        assert_eq!(
            app.me(Some(&tokens.access_token)).await.status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn login_refresh_and_logout_name_missing_and_mistyped_fields() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        app.signed_up("gina@example.com").await;
        let refresh_tokens = app.count("refresh_tokens").await;
        let cases: Vec<(&str, Value, &str)> = vec![
            ("/login", json!({"password": PASSWORD}), "email"),
            ("/login", json!({"email": "gina@example.com"}), "password"),
            ("/login", json!({"email": 1, "password": PASSWORD}), "email"),
            (
                "/login",
                json!({"email": "gina@example.com", "password": null}),
                "password",
            ),
            ("/refresh", json!({}), "refresh_token"),
            ("/refresh", json!({"refresh_token": 7}), "refresh_token"),
            ("/refresh", json!({"refresh_token": ""}), "refresh_token"),
            ("/logout", json!({}), "refresh_token"),
            ("/logout", json!({"refresh_token": ["x"]}), "refresh_token"),
            ("/logout", json!({"refresh_token": ""}), "refresh_token"),
        ];
        for (path, body, field) in &cases {
            let response = app.post(path, body).await;
            assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, field).await;
        }
        // Well-formed but unknown refresh tokens are refused as unauthorised.
        for path in ["/refresh", "/logout"] {
            for token in ["garbage", &"x".repeat(300)] {
                let response = app.post(path, &json!({ "refresh_token": token })).await;
                assert_problem(response, StatusCode::UNAUTHORIZED, "refresh_token").await;
            }
        }
        assert_eq!(app.count("refresh_tokens").await, refresh_tokens);
        assert_eq!(app.active_refresh_tokens().await, refresh_tokens);
    }
}

#[tokio::test]
async fn wrong_email_and_wrong_password_look_the_same() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        app.signed_up("hank@example.com").await;
        let before = app.count("refresh_tokens").await;
        let mut bodies = Vec::new();
        for (email, password) in [
            ("hank@example.com", "wrong-password-1"),
            ("nobody@example.com", PASSWORD),
            ("hank@example.com", ""),
            ("", ""),
        ] {
            let response = app.login(email, password).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let body: Value = response.json().await.unwrap();
            assert!(body.get("invalid-params").is_none(), "{body}");
            bodies.push(body);
        }
        assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
        assert_eq!(bodies[0]["detail"], "the email or password is wrong");
        assert_eq!(app.count("refresh_tokens").await, before);
    }
}
