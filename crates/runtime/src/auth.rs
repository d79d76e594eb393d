//! JWT verification against a JWKS, and the extractors that require a user or a role.
//!
//! The keys come from the identity service's JWKS endpoint through a [`Transport`], so the
//! same verifier works in one process and across processes. A token signed with a key id
//! the verifier has not seen triggers one refetch (at most every 10 s), so key rotation
//! needs no restart.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::{
    client::{JsonClient, Transport},
    problem::Problem,
};

/// The role that may change the catalog.
pub const ADMIN_ROLE: &str = "admin";

/// The claims of a Tideway access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's email.
    pub email: String,
    /// The user's roles (`customer`, `admin`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The issuer.
    pub iss: String,
    /// The audience.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// The token's unique id.
    pub jti: String,
}

impl Claims {
    /// Whether the user has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a request was not authorised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token.
    #[error("a bearer token is required")]
    Missing,
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token is malformed, wrongly signed, or for another issuer or audience.
    #[error("the token is invalid: {0}")]
    Invalid(String),
    /// The keys could not be fetched.
    #[error("the signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// The user lacks a role.
    #[error("the `{0}` role is required")]
    Forbidden(String),
}

impl AuthError {
    /// The problem document for this error: 401 (with `WWW-Authenticate`), 403 or 503.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Missing | Self::Expired | Self::Invalid(_) => {
                Problem::new(StatusCode::UNAUTHORIZED)
                    .with_type("/problems/unauthorized")
                    .with_detail(self.to_string())
                    .with_param("authorization", self.to_string())
            }
            Self::Forbidden(_) => Problem::new(StatusCode::FORBIDDEN)
                .with_type("/problems/forbidden")
                .with_detail(self.to_string()),
            Self::KeysUnavailable(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_detail("authentication is unavailable; try again shortly"),
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut response = self.problem().into_response();
        if response.status() == StatusCode::UNAUTHORIZED {
            let value = match self {
                Self::Missing => "Bearer",
                _ => "Bearer error=\"invalid_token\"",
            };
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        response
    }
}

/// Verifies access tokens (EdDSA) for one issuer and audience.
pub struct JwtVerifier {
    issuer: String,
    audience: String,
    keys: ArcSwap<Keys>,
    /// The rules every token is checked against, built once.
    validation: Validation,
    source: Option<(JsonClient, String)>,
    last_fetch: Mutex<Option<Instant>>,
    /// Tokens verified lately, by their exact text: a signed-in page's token crosses the
    /// web front, the gateway and a service, and an Ed25519 check costs about 40 µs, so
    /// each token is checked once per [`VERIFIED_TTL`] and per process, not at every hop.
    /// Only tokens that passed every check are kept; a kept one still expires at its `exp`.
    verified: moka::sync::Cache<Arc<str>, Arc<Claims>>,
}

/// How long a verified token is taken on trust before it is checked again: the delay with
/// which a signing key removed from the JWKS stops being accepted.
pub const VERIFIED_TTL: Duration = Duration::from_secs(30);

/// The most memory the verified tokens may use, in bytes (about 10,000 tokens).
const VERIFIED_BYTES: u64 = 8 * 1024 * 1024;

/// Seconds of clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

fn verified_cache() -> moka::sync::Cache<Arc<str>, Arc<Claims>> {
    moka::sync::Cache::builder()
        .max_capacity(VERIFIED_BYTES)
        .weigher(|token: &Arc<str>, claims: &Arc<Claims>| {
            let size = token.len()
                + claims.sub.len()
                + claims.email.len()
                + claims.jti.len()
                + claims.roles.iter().map(String::len).sum::<usize>()
                + 128;
            u32::try_from(size).unwrap_or(u32::MAX)
        })
        .time_to_live(VERIFIED_TTL)
        .build()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A JWK set with each key decoded once, not per token.
struct Keys {
    decoding: Vec<(String, DecodingKey)>,
}

impl Keys {
    /// Decodes the keys of `set` that carry a key id; a key that does not decode is left
    /// out (a token naming it is refused as an unknown key).
    fn of(set: &JwkSet) -> Self {
        let decoding = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                match DecodingKey::from_jwk(jwk) {
                    Ok(key) => Some((kid, key)),
                    Err(err) => {
                        tracing::warn!(kid, error = %err, "a signing key that does not decode is ignored");
                        None
                    }
                }
            })
            .collect();
        Self { decoding }
    }

    fn find(&self, kid: &str) -> Option<&DecodingKey> {
        self.decoding
            .iter()
            .find_map(|(id, key)| (id == kid).then_some(key))
    }
}

/// The checks of an access token: EdDSA only, the issuer, the audience, `exp`, `nbf`.
fn validation(issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // A token not valid yet is refused like an expired one (jsonwebtoken skips `nbf`
    // unless asked).
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    validation
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

impl JwtVerifier {
    /// A verifier with fixed keys.
    pub fn from_keys(keys: JwkSet, issuer: &str, audience: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: ArcSwap::from_pointee(Keys::of(&keys)),
            validation: validation(issuer, audience),
            source: None,
            last_fetch: Mutex::new(None),
            verified: verified_cache(),
        }
    }

    /// A verifier that fetches the JWKS at `path` through `transport` when it first needs it
    /// and whenever it meets an unknown key id.
    pub fn from_jwks(transport: Transport, path: &str, issuer: &str, audience: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: ArcSwap::from_pointee(Keys {
                decoding: Vec::new(),
            }),
            validation: validation(issuer, audience),
            source: Some((JsonClient::new(transport), path.to_owned())),
            last_fetch: Mutex::new(None),
            verified: verified_cache(),
        }
    }

    /// Verifies `token` and returns its claims. A token verified in the last
    /// [`VERIFIED_TTL`] is not checked again, only its expiry.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if let Some(claims) = self.verified.get(token) {
            if claims.exp.saturating_add(LEEWAY_SECS) < now_secs() {
                self.verified.invalidate(token);
                return Err(AuthError::Expired);
            }
            return Ok(Claims::clone(&claims));
        }
        let claims = self.verify_signed(token).await?;
        self.verified.insert(token.into(), Arc::new(claims.clone()));
        Ok(claims)
    }

    /// Checks `token` in full: its header, signature and claims.
    async fn verify_signed(&self, token: &str) -> Result<Claims, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid("the algorithm must be EdDSA".to_owned()));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("the token has no key id".to_owned()))?;
        let keys = self.keys_with(&kid).await?;
        let key = keys
            .find(&kid)
            .ok_or_else(|| AuthError::Invalid(format!("unknown key id {kid}")))?;
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(err.to_string()),
            })
    }

    async fn keys_with(&self, kid: &str) -> Result<Arc<Keys>, AuthError> {
        let keys = self.keys.load_full();
        if keys.find(kid).is_some() {
            return Ok(keys);
        }
        let Some((client, path)) = &self.source else {
            return Ok(keys);
        };
        let mut last_fetch = self.last_fetch.lock().await;
        // Another request may have fetched while this one waited for the lock.
        let keys = self.keys.load_full();
        if keys.find(kid).is_some() {
            return Ok(keys);
        }
        if last_fetch.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
            return Ok(keys);
        }
        let fetched: JwkSet = client
            .get(path, &HeaderMap::new())
            .await
            .map_err(|err| AuthError::KeysUnavailable(err.to_string()))?;
        *last_fetch = Some(Instant::now());
        let fetched = Arc::new(Keys::of(&fetched));
        self.keys.store(fetched.clone());
        tracing::info!(keys = fetched.decoding.len(), "fetched signing keys");
        Ok(fetched)
    }
}

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Invalid("the authorization header is not text".to_owned()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| AuthError::Invalid("expected `Bearer <token>`".to_owned()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Invalid("expected `Bearer <token>`".to_owned()));
    }
    Ok(token.trim())
}

async fn verified(parts: &Parts) -> Result<Claims, AuthError> {
    let verifier = parts
        .extensions
        .get::<Arc<JwtVerifier>>()
        .cloned()
        .ok_or_else(|| AuthError::KeysUnavailable("no verifier is configured".to_owned()))?;
    verifier.verify(bearer(&parts.headers)?).await
}

/// A request with a valid access token. The router must carry an
/// `Extension(Arc<JwtVerifier>)`.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Claims);

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        verified(parts).await.map(AuthUser)
    }
}

/// A request with a valid access token of a user with the `admin` role.
#[derive(Debug, Clone)]
pub struct AdminUser(pub Claims);

impl<S: Send + Sync> FromRequestParts<S> for AdminUser {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let claims = verified(parts).await?;
        if !claims.has_role(ADMIN_ROLE) {
            return Err(AuthError::Forbidden(ADMIN_ROLE.to_owned()));
        }
        Ok(AdminUser(claims))
    }
}

/// Signs access tokens with an Ed25519 key and publishes its public half as a JWK.
///
/// The identity service issues tokens with it; tests use it to mint tokens for services
/// without running the identity service.
pub struct TokenSigner {
    key_id: String,
    pem: String,
    encoding: jsonwebtoken::EncodingKey,
    public: [u8; 32],
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("TokenSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer with a new random key.
    pub fn generate() -> Result<Self, AuthError> {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_signing_key(&key)
    }

    /// A signer from a PKCS#8 PEM Ed25519 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, AuthError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|err| {
            AuthError::Invalid(format!(
                "the signing key is not a PKCS#8 Ed25519 PEM: {err}"
            ))
        })?;
        Self::from_signing_key(&key)
    }

    fn from_signing_key(key: &ed25519_dalek::SigningKey) -> Result<Self, AuthError> {
        use base64::Engine;
        use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
        use sha2::Digest;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|err| AuthError::Invalid(err.to_string()))?
            .to_string();
        let encoding = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|err| AuthError::Invalid(err.to_string()))?;
        let public = key.verifying_key().to_bytes();
        let digest = sha2::Sha256::digest(public);
        let key_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]);
        Ok(Self {
            key_id,
            pem,
            encoding,
            public,
        })
    }

    /// The private key as PKCS#8 PEM, to persist it. Handle as a secret.
    pub fn to_pkcs8_pem(&self) -> &str {
        &self.pem
    }

    /// The key id (`kid`) put in every token's header.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key as a JWK set.
    pub fn jwks(&self) -> JwkSet {
        use base64::Engine;
        use jsonwebtoken::jwk::{
            AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm,
            OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
        };
        JwkSet {
            keys: vec![Jwk {
                common: CommonParameters {
                    public_key_use: Some(PublicKeyUse::Signature),
                    key_algorithm: Some(KeyAlgorithm::EdDSA),
                    key_id: Some(self.key_id.clone()),
                    ..CommonParameters::default()
                },
                algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public),
                }),
            }],
        }
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|err| AuthError::Invalid(err.to_string()))
    }

    /// Claims for `sub` with `roles`, issued now and valid for `ttl`.
    pub fn claims(
        sub: &str,
        email: &str,
        roles: &[&str],
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Claims {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Claims {
            sub: sub.to_owned(),
            email: email.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            iat: now,
            exp: now + ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier_for(signer: &TokenSigner) -> JwtVerifier {
        JwtVerifier::from_keys(signer.jwks(), "tideway", "tideway")
    }

    #[tokio::test]
    async fn verifies_its_own_tokens_and_round_trips_the_key() {
        let signer = TokenSigner::generate().unwrap();
        let claims = TokenSigner::claims(
            "u1",
            "a@b.c",
            &["admin"],
            "tideway",
            "tideway",
            Duration::from_secs(60),
        );
        let token = signer.sign(&claims).unwrap();
        assert_eq!(verifier_for(&signer).verify(&token).await.unwrap(), claims);

        let again = TokenSigner::from_pkcs8_pem(signer.to_pkcs8_pem()).unwrap();
        assert_eq!(again.key_id(), signer.key_id());
        assert_eq!(verifier_for(&again).verify(&token).await.unwrap().sub, "u1");
    }

    #[tokio::test]
    async fn refuses_expired_foreign_and_wrong_audience_tokens() {
        let signer = TokenSigner::generate().unwrap();
        let verifier = verifier_for(&signer);
        let mut claims = TokenSigner::claims(
            "u1",
            "a@b.c",
            &[],
            "tideway",
            "tideway",
            Duration::from_secs(60),
        );
        claims.exp = claims.iat - 120;
        assert_eq!(
            verifier.verify(&signer.sign(&claims).unwrap()).await,
            Err(AuthError::Expired)
        );

        let other = TokenSigner::generate().unwrap();
        let claims = TokenSigner::claims(
            "u1",
            "a@b.c",
            &[],
            "tideway",
            "tideway",
            Duration::from_secs(60),
        );
        assert!(matches!(
            verifier.verify(&other.sign(&claims).unwrap()).await,
            Err(AuthError::Invalid(_))
        ));

        let claims = TokenSigner::claims(
            "u1",
            "a@b.c",
            &[],
            "tideway",
            "elsewhere",
            Duration::from_secs(60),
        );
        assert!(matches!(
            verifier.verify(&signer.sign(&claims).unwrap()).await,
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            verifier.verify("not-a-token").await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_verified_token_is_taken_on_trust_until_it_expires_and_only_as_written() {
        let signer = TokenSigner::generate().unwrap();
        let verifier = verifier_for(&signer);
        let claims = |sub: &str| {
            TokenSigner::claims(
                sub,
                "a@b.c",
                &[],
                "tideway",
                "tideway",
                Duration::from_secs(60),
            )
        };
        let token = signer.sign(&claims("u1")).unwrap();
        assert_eq!(verifier.verify(&token).await.unwrap().sub, "u1");

        // Without its keys the verifier can check no new token, yet the verified one passes.
        verifier.keys.store(Arc::new(Keys {
            decoding: Vec::new(),
        }));
        assert_eq!(verifier.verify(&token).await.unwrap().sub, "u1");
        let fresh = signer.sign(&claims("u2")).unwrap();
        assert!(matches!(
            verifier.verify(&fresh).await,
            Err(AuthError::Invalid(_))
        ));

        // Only the exact text is trusted: a changed signature is checked, and fails.
        let mut tampered = token.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(verifier.verify(&tampered).await.is_err());

        // A kept token past its expiry (and the leeway) is refused and forgotten.
        let mut expired = claims("u1");
        expired.exp = now_secs() - LEEWAY_SECS - 1;
        verifier
            .verified
            .insert(token.as_str().into(), Arc::new(expired));
        assert_eq!(verifier.verify(&token).await, Err(AuthError::Expired));
        assert!(verifier.verified.get(token.as_str()).is_none());
    }

    #[test]
    fn reads_bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), Err(AuthError::Missing));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(bearer(&headers), Err(AuthError::Invalid(_))));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&headers), Ok("abc"));
    }
}
