//! `GET`/`PUT /api/v1/admin/flags` (role admin) and [`RequestFlags`], the flags of a
//! request's user for a handler.

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{FromRequestParts, State},
    http::request::Parts,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use tideway_runtime::{
    Problem,
    auth::{AdminUser, JwtVerifier, bearer},
};

use crate::{FlagContext, FlagError, FlagSet, Flags};

/// The path of the running flags (`GET`, `PUT`; role admin).
pub const FLAGS_PATH: &str = "/api/v1/admin/flags";

/// The answer of `GET`/`PUT /api/v1/admin/flags`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlagsVersion {
    /// The version of the running set: 1 at start, one more per change.
    pub version: u64,
    /// Every flag by name.
    pub flags: FlagSet,
}

/// The body of `PUT /api/v1/admin/flags`: the whole new set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagsBody {
    /// Every flag by name.
    pub flags: FlagSet,
}

/// `GET`/`PUT /api/v1/admin/flags` over `flags`, verifying tokens with `verifier`. A `PUT`
/// replaces the whole set: a body that does not read or a flag that does not validate is
/// a 422 problem naming the field, and the running set stays.
pub fn admin_routes(flags: Flags, verifier: Arc<JwtVerifier>) -> Router {
    Router::new()
        .route(FLAGS_PATH, get(read).put(write))
        .with_state(flags)
        .layer(Extension(verifier))
}

/// The running flags.
#[utoipa::path(
    get,
    path = "/api/v1/admin/flags",
    tag = "flags",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The running flags and their version", body = FlagsVersion),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn read(State(flags): State<Flags>, _admin: AdminUser) -> Json<FlagsVersion> {
    let (version, set) = flags.current();
    Json(FlagsVersion {
        version,
        flags: FlagSet::clone(&set),
    })
}

/// Replaces the whole set of flags; a body that does not read or a flag that does not
/// validate is a problem naming the field, and the running set stays.
#[utoipa::path(
    put,
    path = "/api/v1/admin/flags",
    tag = "flags",
    request_body = FlagsBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new flags and their version", body = FlagsVersion),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 413, response = Problem),
        (status = 422, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn write(
    State(flags): State<Flags>,
    AdminUser(claims): AdminUser,
    body: Bytes,
) -> Response {
    let mut json = serde_json::Deserializer::from_slice(&body);
    let parsed: FlagsBody = match serde_path_to_error::deserialize(&mut json) {
        Ok(parsed) => parsed,
        Err(err) => {
            let path = err.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            return Problem::invalid_field(field, err.inner().to_string()).into_response();
        }
    };
    match flags.replace(parsed.flags.clone(), &claims.sub) {
        Ok(version) => Json(FlagsVersion {
            version,
            flags: parsed.flags,
        })
        .into_response(),
        Err(FlagError::Invalid { field, expected }) => {
            Problem::invalid_field(field, expected).into_response()
        }
    }
}

/// The flags of the request's user, for a handler: `flags.enabled("name")`. The router
/// carries an `Extension(Flags)` (and `Extension(Arc<JwtVerifier>)` to know the user:
/// a request without a valid bearer token is asked about as anonymous).
#[derive(Debug, Clone)]
pub struct RequestFlags {
    /// The running flags.
    pub flags: Flags,
    /// Who asks.
    pub context: FlagContext,
}

impl RequestFlags {
    /// Whether `name` is on for this request's user.
    pub fn enabled(&self, name: &str) -> bool {
        self.flags.enabled(name, &self.context)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestFlags {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(flags) = parts.extensions.get::<Flags>().cloned() else {
            tracing::error!("a handler reads flags, but its router carries none");
            return Err(Problem::internal().into_response());
        };
        let verifier = parts.extensions.get::<Arc<JwtVerifier>>().cloned();
        let context = match (verifier, bearer(&parts.headers)) {
            (Some(verifier), Ok(token)) => match verifier.verify(token).await {
                Ok(claims) => FlagContext::of_claims(&claims),
                Err(_) => FlagContext::anonymous(),
            },
            _ => FlagContext::anonymous(),
        };
        Ok(Self { flags, context })
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request, http::StatusCode};
    use tideway_runtime::auth::TokenSigner;
    use tower::ServiceExt;

    use super::*;
    use crate::Flag;

    struct Fixture {
        flags: Flags,
        router: Router,
        signer: TokenSigner,
    }

    fn fixture() -> Fixture {
        let signer = TokenSigner::generate().expect("signer");
        let verifier = Arc::new(JwtVerifier::from_keys(signer.jwks(), "tideway", "tideway"));
        let flags = Flags::default();
        let probe = Router::new()
            .route(
                "/probe",
                get(|flags: RequestFlags| async move {
                    if flags.enabled("panel") { "on" } else { "off" }
                }),
            )
            .layer(Extension(flags.clone()))
            .layer(Extension(Arc::clone(&verifier)));
        let router = admin_routes(flags.clone(), verifier).merge(probe);
        Fixture {
            flags,
            router,
            signer,
        }
    }

    impl Fixture {
        fn token(&self, user: &str, roles: &[&str]) -> String {
            let claims = TokenSigner::claims(
                user,
                &format!("{user}@example.com"),
                roles,
                "tideway",
                "tideway",
                std::time::Duration::from_secs(300),
            );
            self.signer.sign(&claims).expect("token")
        }

        async fn send(
            &self,
            method: &str,
            path: &str,
            token: Option<&str>,
            body: &str,
        ) -> (StatusCode, serde_json::Value) {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let request = request
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
                .expect("request");
            let response = self.router.clone().oneshot(request).await.expect("answer");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            });
            (status, json)
        }
    }

    #[tokio::test]
    async fn only_admins_read_and_change_the_flags() {
        let fx = fixture();
        let customer = fx.token("ann", &["customer"]);
        let (status, _) = fx.send("GET", FLAGS_PATH, None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = fx.send("GET", FLAGS_PATH, Some(&customer), "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = fx
            .send(
                "PUT",
                FLAGS_PATH,
                Some(&customer),
                r#"{"flags":{"panel":{"enabled":true}}}"#,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(fx.flags.version(), 1, "nothing changed");

        let admin = fx.token("root", &["admin"]);
        let (status, body) = fx.send("GET", FLAGS_PATH, Some(&admin), "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!({ "version": 1, "flags": {} }));
    }

    #[tokio::test]
    async fn a_put_swaps_the_whole_set_and_a_bad_one_names_the_field() {
        let fx = fixture();
        let admin = fx.token("root", &["admin"]);
        let ann = fx.token("ann", &["customer"]);
        let (_, off) = fx.send("GET", "/probe", Some(&ann), "").await;
        assert_eq!(off, "off");

        let (status, body) = fx
            .send(
                "PUT",
                FLAGS_PATH,
                Some(&admin),
                r#"{"flags":{"panel":{"users":["ann"]}}}"#,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["version"], 2);
        let (_, on) = fx.send("GET", "/probe", Some(&ann), "").await;
        assert_eq!(on, "on", "the next request sees the new set");
        let (_, anonymous) = fx.send("GET", "/probe", None, "").await;
        assert_eq!(anonymous, "off");

        for (body, field) in [
            (
                r#"{"flags":{"panel":{"percent":150}}}"#,
                "flags.panel.percent",
            ),
            (
                r#"{"flags":{"panel":{"percent":"half"}}}"#,
                "flags.panel.percent",
            ),
            (
                r#"{"flags":{"panel":{"enabled":true,"colour":"red"}}}"#,
                "flags.panel.colour",
            ),
            (
                r#"{"flags":{"Bad Name":{"enabled":true}}}"#,
                "flags.Bad Name",
            ),
            (
                r#"{"flags":{"panel":{"users":[""]}}}"#,
                "flags.panel.users[0]",
            ),
            (r#"{"flag":{}}"#, "flag"),
            ("{}", "body"),
            ("not json", "body"),
        ] {
            let (status, problem) = fx.send("PUT", FLAGS_PATH, Some(&admin), body).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{body}: {problem}"
            );
            assert_eq!(
                problem["invalid-params"][0]["name"], field,
                "{body}: {problem}"
            );
        }
        let (_, body) = fx.send("GET", FLAGS_PATH, Some(&admin), "").await;
        assert_eq!(body["version"], 2, "every bad one was refused whole");
        assert_eq!(
            fx.flags.current().1.0.get("panel"),
            Some(&Flag {
                users: vec!["ann".into()],
                ..Flag::default()
            })
        );
    }
}
