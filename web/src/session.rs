//! Sessions: the identity service's tokens kept in HttpOnly cookies.
//!
//! The access token (short-lived) and the refresh token sit in two cookies, `SameSite=Lax`,
//! `Secure` and `__Host-` prefixed when the shop's public origin is `https`. Before every
//! page the middleware verifies the access token; when it has expired and a refresh token is
//! there, it trades the refresh token for new ones and sets the cookies on the answer.
//!
//! A refresh token works once, and presenting a used one revokes the whole session (the
//! identity service's reuse detection), so a browser's parallel requests must not each
//! refresh: [`Refreshes`] makes one refresh per refresh token, which every request holding
//! that token waits for and shares, and remembers its outcome for a short grace so requests
//! already on their way with the old cookie get the same new tokens. Only the identity
//! service's 401 ends a session here; an outage keeps the cookies for the next page.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::request::Parts,
    middleware::Next,
    response::{IntoResponse, Response},
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use http::StatusCode;
use sha2::{Digest, Sha256};
use tideway_identity_api::TokenResponse;
use tideway_runtime::{
    auth::{ADMIN_ROLE, AuthError, Claims},
    client::ClientError,
};
use tokio::sync::OnceCell;

use crate::{AppState, security::CsrfToken};

/// How long the outcome of a refresh is shared with requests bearing the same old token.
const REFRESH_GRACE: Duration = Duration::from_secs(30);
/// At most this many refresh outcomes are remembered; past it, expired ones are dropped.
const MAX_REMEMBERED: usize = 10_000;

/// The names of the session cookies and how they are marked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cookies {
    pub(crate) access: &'static str,
    pub(crate) refresh: &'static str,
    pub(crate) csrf: &'static str,
    pub(crate) secure: bool,
}

impl Cookies {
    /// `__Host-` names and `Secure` over TLS; plain names over HTTP (browsers refuse
    /// `Secure` cookies from `http://` origins other than localhost).
    pub(crate) fn new(secure: bool) -> Self {
        if secure {
            Self {
                access: "__Host-tw_access",
                refresh: "__Host-tw_refresh",
                csrf: "__Host-tw_csrf",
                secure,
            }
        } else {
            Self {
                access: "tw_access",
                refresh: "tw_refresh",
                csrf: "tw_csrf",
                secure,
            }
        }
    }

    fn build(&self, name: &'static str, value: String, max_age_s: u64) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .max_age(time::Duration::seconds(
                i64::try_from(max_age_s).unwrap_or(i64::MAX),
            ))
            .build()
    }
}

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
    /// The token every form of the page carries (see [`crate::security`]).
    pub(crate) csrf: String,
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

impl Visitor {
    /// Who the feature flags are asked about: the user's id and roles, or nobody.
    pub(crate) fn flag_context(&self) -> tideway_flags::FlagContext {
        match &self.user {
            Some(user) => tideway_flags::FlagContext::of_claims(&user.claims),
            None => tideway_flags::FlagContext::anonymous(),
        }
    }
}

/// The cookies that sign a user in with `tokens`.
pub(crate) fn sign_in(cookies: &Cookies, jar: CookieJar, tokens: &TokenResponse) -> CookieJar {
    jar.add(cookies.build(
        cookies.access,
        tokens.access_token.clone(),
        tokens.refresh_expires_in,
    ))
    .add(cookies.build(
        cookies.refresh,
        tokens.refresh_token.clone(),
        tokens.refresh_expires_in,
    ))
}

/// The cookies removed, and the refresh token they held (to revoke).
pub(crate) fn sign_out(cookies: &Cookies, jar: CookieJar) -> (CookieJar, Option<String>) {
    let refresh = jar.get(cookies.refresh).map(|c| c.value().to_owned());
    let jar = jar
        .remove(Cookie::build(cookies.access).path("/"))
        .remove(Cookie::build(cookies.refresh).path("/"));
    (jar, refresh)
}

/// How a refresh ended.
#[derive(Debug, Clone)]
enum Refreshed {
    /// New tokens.
    Tokens(TokenResponse),
    /// The identity service refused the token (401): the session is over.
    Refused,
    /// It could not be asked; the session may still be good.
    Unavailable,
}

/// One refresh in flight or just done, shared by every request holding the same token.
struct Flight {
    started: Instant,
    outcome: Arc<OnceCell<Refreshed>>,
}

/// The refreshes of every session: at most one at a time per refresh token.
#[derive(Default)]
pub(crate) struct Refreshes {
    flights: Mutex<HashMap<[u8; 32], Flight>>,
}

impl Refreshes {
    /// Refreshes `token` once, however many requests ask at the same time.
    async fn refresh(&self, state: &AppState, token: &str) -> Refreshed {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cell = {
            let mut flights = self
                .flights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if flights.len() >= MAX_REMEMBERED {
                flights.retain(|_, flight| flight.started.elapsed() < REFRESH_GRACE);
            }
            match flights.get(&key) {
                Some(flight) if flight.started.elapsed() < REFRESH_GRACE => flight.outcome.clone(),
                _ => {
                    let outcome = Arc::new(OnceCell::new());
                    flights.insert(
                        key,
                        Flight {
                            started: Instant::now(),
                            outcome: outcome.clone(),
                        },
                    );
                    outcome
                }
            }
        };
        let outcome = cell
            .get_or_init(|| async {
                match state.api.identity.refresh(token).await {
                    Ok(tokens) => Refreshed::Tokens(tokens),
                    Err(ClientError::Status { status, .. })
                        if status == StatusCode::UNAUTHORIZED =>
                    {
                        Refreshed::Refused
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "the session could not be refreshed");
                        Refreshed::Unavailable
                    }
                }
            })
            .await
            .clone();
        if matches!(outcome, Refreshed::Unavailable) {
            // Let the next page try again rather than share the outage.
            let mut flights = self
                .flights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if flights
                .get(&key)
                .is_some_and(|flight| Arc::ptr_eq(&flight.outcome, &cell))
            {
                flights.remove(&key);
            }
        }
        outcome
    }
}

/// Finds the visitor, refreshing an expired session, before the page runs.
pub(crate) async fn middleware(
    State(state): State<AppState>,
    jar: CookieJar,
    mut request: Request,
    next: Next,
) -> Response {
    let cookies = state.cookies;
    let mut visitor = Visitor {
        user: None,
        csrf: request
            .extensions()
            .get::<CsrfToken>()
            .map(|t| t.0.clone())
            .unwrap_or_default(),
    };
    let mut refresh_needed = true;
    if let Some(token) = jar.get(cookies.access).map(|c| c.value().to_owned()) {
        match state.verifier.verify(&token).await {
            Ok(claims) => {
                visitor.user = Some(User { claims, token });
                refresh_needed = false;
            }
            // The token may be fine; refreshing now would only spend the refresh token.
            Err(AuthError::KeysUnavailable(reason)) => {
                tracing::warn!(reason, "the session cannot be checked");
                refresh_needed = false;
            }
            Err(_) => {}
        }
    }
    let mut refreshed = None;
    if refresh_needed && let Some(refresh) = jar.get(cookies.refresh).map(|c| c.value().to_owned())
    {
        match state.refreshes.refresh(&state, &refresh).await {
            Refreshed::Tokens(tokens) => {
                if let Ok(claims) = state.verifier.verify(&tokens.access_token).await {
                    visitor.user = Some(User {
                        claims,
                        token: tokens.access_token.clone(),
                    });
                }
                refreshed = Some(sign_in(&cookies, jar.clone(), &tokens));
            }
            Refreshed::Refused => refreshed = Some(sign_out(&cookies, jar.clone()).0),
            Refreshed::Unavailable => {}
        }
    }
    request.extensions_mut().insert(visitor);
    let response = next.run(request).await;
    match refreshed {
        // A page that signs in or out sets its own session cookies; they win.
        Some(jar) if !sets_session(&response, &cookies) => (jar, response).into_response(),
        _ => response,
    }
}

/// Whether `response` sets a session cookie itself.
fn sets_session(response: &Response, cookies: &Cookies) -> bool {
    response
        .headers()
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with(&format!("{}=", cookies.access)))
}
