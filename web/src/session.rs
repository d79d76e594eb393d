//! Sessions: the identity service's tokens kept in HttpOnly cookies.
//!
//! The access token (short-lived) and the refresh token sit in two cookies, `SameSite=Lax`
//! so another site cannot post a form with them. Before every page the middleware verifies
//! the access token; when it has expired and a refresh token is there, it trades the refresh
//! token for new ones and sets the cookies on the answer. The handlers see a [`Visitor`].

use axum::{
    extract::{FromRequestParts, Request, State},
    http::request::Parts,
    middleware::Next,
    response::{IntoResponse, Response},
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use tideway_identity_api::TokenResponse;
use tideway_runtime::auth::{ADMIN_ROLE, Claims};

use crate::AppState;

const ACCESS: &str = "tw_access";
const REFRESH: &str = "tw_refresh";

/// A signed-in user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) claims: Claims,
    pub(crate) token: String,
}

impl User {
    pub(crate) fn is_admin(&self) -> bool {
        self.claims.has_role(ADMIN_ROLE)
    }
}

/// Whoever asked for the page.
#[derive(Debug, Clone, Default)]
pub(crate) struct Visitor {
    pub(crate) user: Option<User>,
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Visitor>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The cookies that sign a user in with `tokens`.
pub(crate) fn sign_in(jar: CookieJar, tokens: &TokenResponse) -> CookieJar {
    jar.add(cookie(
        ACCESS,
        tokens.access_token.clone(),
        tokens.refresh_expires_in,
    ))
    .add(cookie(
        REFRESH,
        tokens.refresh_token.clone(),
        tokens.refresh_expires_in,
    ))
}

/// The cookies removed, and the refresh token they held (to revoke).
pub(crate) fn sign_out(jar: CookieJar) -> (CookieJar, Option<String>) {
    let refresh = jar.get(REFRESH).map(|c| c.value().to_owned());
    let jar = jar
        .remove(Cookie::build(ACCESS).path("/"))
        .remove(Cookie::build(REFRESH).path("/"));
    (jar, refresh)
}

fn cookie(name: &'static str, value: String, max_age_s: u64) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(time::Duration::seconds(
            i64::try_from(max_age_s).unwrap_or(i64::MAX),
        ))
        .build()
}

/// Finds the visitor, refreshing an expired session, before the page runs.
pub(crate) async fn middleware(
    State(state): State<AppState>,
    jar: CookieJar,
    mut request: Request,
    next: Next,
) -> Response {
    let mut visitor = Visitor::default();
    let mut refreshed = None;
    if let Some(token) = jar.get(ACCESS).map(|c| c.value().to_owned())
        && let Ok(claims) = state.verifier.verify(&token).await
    {
        visitor.user = Some(User { claims, token });
    }
    if visitor.user.is_none()
        && let Some(refresh) = jar.get(REFRESH).map(|c| c.value().to_owned())
    {
        match state.api.identity.refresh(&refresh).await {
            Ok(tokens) => {
                if let Ok(claims) = state.verifier.verify(&tokens.access_token).await {
                    visitor.user = Some(User {
                        claims,
                        token: tokens.access_token.clone(),
                    });
                }
                refreshed = Some(sign_in(jar.clone(), &tokens));
            }
            Err(err) => {
                tracing::debug!(error = %err, "the session could not be refreshed");
                refreshed = Some(sign_out(jar.clone()).0);
            }
        }
    }
    request.extensions_mut().insert(visitor);
    let response = next.run(request).await;
    match refreshed {
        // A page that signs in or out sets its own cookies; they win.
        Some(jar) if !response.headers().contains_key(http::header::SET_COOKIE) => {
            (jar, response).into_response()
        }
        _ => response,
    }
}
