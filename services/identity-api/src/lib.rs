//! The contract of the identity service: registration, login with access and refresh
//! tokens, the current user, and the JWKS other services verify access tokens against.
//!
//! [`IdentityClient`] is the typed client; it works in-process or over HTTP through a
//! [`Transport`]. Services that only need to verify tokens do not call it: they build a
//! `tideway_runtime::auth::JwtVerifier::from_jwks(transport, JWKS_PATH, …)`. The
//! contract stays free of any JWT library: [`IdentityClient::jwks`] decodes the key set into
//! the caller's own type.
#![warn(missing_docs)]

use http::{HeaderMap, HeaderValue, Method, header};
use serde::{Deserialize, Serialize};
use tideway_client::{ClientError, JsonClient, Transport};

/// The service's name (metrics, logs, routes).
pub const SERVICE: &str = "identity";
/// The path prefix of every identity endpoint.
pub const PREFIX: &str = "/api/v1/identity";
/// Where the public signing keys are published.
pub const JWKS_PATH: &str = "/api/v1/identity/.well-known/jwks.json";
/// Where a user ends all their sessions (with an access token).
pub const LOGOUT_ALL_PATH: &str = "/api/v1/identity/logout-all";
/// The role every registered user has.
pub const CUSTOMER_ROLE: &str = "customer";

/// The body of `POST /api/v1/identity/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisterRequest {
    /// The email: trimmed and lower-cased, at most 254 characters, one `@`, a non-empty
    /// local part and a domain with a dot.
    #[schema(max_length = 254)]
    pub email: String,
    /// 10–128 characters with at least one letter and one digit, not the email.
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    /// The display name, 1–80 characters.
    #[schema(min_length = 1, max_length = 80)]
    pub name: String,
}

/// A user as the API shows it (never with a password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    /// The user id (a UUID).
    pub id: String,
    /// The normalised email.
    pub email: String,
    /// The display name.
    pub name: String,
    /// The roles (`customer`, `admin`).
    pub roles: Vec<String>,
    /// Registration time, RFC 3339 UTC.
    pub created_at: String,
}

/// The body of `POST /api/v1/identity/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    /// The email (compared after trimming and lower-casing).
    pub email: String,
    /// The password.
    pub password: String,
}

/// The answer of a login or a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The access token (a JWT signed with EdDSA).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token: opaque, single use (a refresh rotates it; presenting a used one
    /// again revokes every token of its session).
    pub refresh_token: String,
    /// Seconds until the refresh token expires: its own lifetime, cut short by the
    /// session's absolute lifetime.
    pub refresh_expires_in: u64,
}

/// The body of `POST /api/v1/identity/refresh` and `POST /api/v1/identity/logout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RefreshRequest {
    /// The refresh token of the last login or refresh.
    pub refresh_token: String,
}

/// The typed client of the identity service.
#[derive(Debug, Clone)]
pub struct IdentityClient {
    inner: JsonClient,
}

impl IdentityClient {
    /// A client over `transport` (in-process or HTTP).
    pub fn new(transport: Transport) -> Self {
        Self {
            inner: JsonClient::new(transport),
        }
    }

    /// Registers a user.
    pub async fn register(&self, request: &RegisterRequest) -> Result<UserView, ClientError> {
        self.post("/register", request, &HeaderMap::new()).await
    }

    /// Logs in.
    pub async fn login(&self, request: &LoginRequest) -> Result<TokenResponse, ClientError> {
        self.post("/login", request, &HeaderMap::new()).await
    }

    /// Exchanges a refresh token for new tokens; the old refresh token stops working.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, ClientError> {
        let body = RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        };
        self.post("/refresh", &body, &HeaderMap::new()).await
    }

    /// Ends the session of a refresh token: it and every token rotated from it.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), ClientError> {
        let body = RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        };
        self.post("/logout", &body, &HeaderMap::new()).await
    }

    /// Ends every session of the user the access token `token` belongs to ("sign out
    /// everywhere"): no refresh token of theirs works afterwards. Access tokens already
    /// issued stay valid until they expire (`expires_in`, 15 minutes by default).
    pub async fn logout_all(&self, token: &str) -> Result<(), ClientError> {
        self.inner
            .call(Method::POST, LOGOUT_ALL_PATH, None::<&()>, &bearer(token)?)
            .await
    }

    /// The user the access token `token` belongs to.
    pub async fn me(&self, token: &str) -> Result<UserView, ClientError> {
        self.inner
            .get(&format!("{PREFIX}/me"), &bearer(token)?)
            .await
    }

    /// The public signing keys (RFC 7517 JSON), decoded into the caller's key-set type
    /// (`jsonwebtoken::jwk::JwkSet`, say).
    pub async fn jwks<T: serde::de::DeserializeOwned>(&self) -> Result<T, ClientError> {
        self.inner.get(JWKS_PATH, &HeaderMap::new()).await
    }

    async fn post<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        headers: &HeaderMap,
    ) -> Result<T, ClientError> {
        self.inner
            .call(
                Method::POST,
                &format!("{PREFIX}{path}"),
                Some(body),
                headers,
            )
            .await
    }
}

fn bearer(token: &str) -> Result<HeaderMap, ClientError> {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ClientError::InvalidRequest("the token is not a header value".into()))?;
    headers.insert(header::AUTHORIZATION, value);
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_response_has_the_oauth_field_names() {
        let json = serde_json::to_value(TokenResponse {
            access_token: "a".into(),
            token_type: "Bearer".into(),
            expires_in: 900,
            refresh_token: "r".into(),
            refresh_expires_in: 60,
        })
        .unwrap();
        assert_eq!(json["token_type"], "Bearer");
        assert_eq!(json["expires_in"], 900);
        assert_eq!(json["refresh_expires_in"], 60);
        assert!(JWKS_PATH.starts_with(PREFIX));
    }
}
