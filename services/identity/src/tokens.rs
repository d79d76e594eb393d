//! Login, refresh (rotating), logout, and the JWKS.
//!
//! A refresh token is 32 random bytes (base64url); only its SHA-256 is stored, so a copy of
//! the database cannot be replayed. Each refresh revokes the token it consumed in the same
//! transaction that stores its successor, so a token works at most once even when two
//! requests race.

use std::time::Duration;

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tideway_identity_api::{LoginRequest, RefreshRequest, TokenResponse};
use tideway_runtime::{auth::TokenSigner, extract::Json};
use tideway_store::Row;

use crate::{
    ApiError, Identity, now_millis, now_text,
    users::{self, UserRow},
};

/// Refresh tokens we issue are 43 characters; anything much longer is not one of ours.
const MAX_REFRESH_TOKEN_CHARS: usize = 256;

/// `POST /api/identity/login`.
#[tracing::instrument(skip_all)]
pub(crate) async fn login(
    State(app): State<Identity>,
    Json(request): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let email = request.email.trim().to_lowercase();
    let user = users::find_by_email(app.db().pool(), &email).await?;
    // Verify against a dummy hash for unknown emails so both failures take as long.
    let hash = match &user {
        Some(user) => user.password_hash.clone(),
        None => app.inner.dummy_hash.clone(),
    };
    let matches = app.inner.hasher.verify(request.password, hash).await?;
    let Some(user) = user.filter(|_| matches) else {
        tracing::info!("a login failed");
        return Err(ApiError::BadCredentials);
    };
    let mut tx = app.db().begin().await?;
    let refresh_token = store_refresh_token(&mut tx, &app, &user.id).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "a user logged in");
    issue(&app, &user, refresh_token).map(Json)
}

/// `POST /api/identity/refresh`: new tokens for a valid refresh token, which is revoked.
#[tracing::instrument(skip_all)]
pub(crate) async fn refresh(
    State(app): State<Identity>,
    Json(request): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let hash = refresh_token_hash(&request.refresh_token)?;
    let mut tx = app.db().begin().await?;
    let consumed = sqlx::query(
        "UPDATE refresh_tokens SET revoked = 1 \
         WHERE token_hash = $1 AND revoked = 0 AND expires_at > $2 RETURNING user_id",
    )
    .bind(&hash)
    .bind(now_millis())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = consumed else {
        tracing::info!("a refresh token was refused");
        return Err(ApiError::BadRefreshToken);
    };
    let user_id: String = row.try_get("user_id")?;
    let user = users::find_by_id(&mut *tx, &user_id)
        .await?
        .ok_or(ApiError::BadRefreshToken)?;
    let refresh_token = store_refresh_token(&mut tx, &app, &user.id).await?;
    let response = issue(&app, &user, refresh_token)?;
    tx.commit().await?;
    Ok(Json(response))
}

/// `POST /api/identity/logout`: revokes the refresh token (again, if it already was).
#[tracing::instrument(skip_all)]
pub(crate) async fn logout(
    State(app): State<Identity>,
    Json(request): Json<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let hash = refresh_token_hash(&request.refresh_token)?;
    let revoked = sqlx::query(
        "UPDATE refresh_tokens SET revoked = 1 WHERE token_hash = $1 RETURNING user_id",
    )
    .bind(&hash)
    .fetch_optional(app.db().pool())
    .await?;
    if revoked.is_none() {
        return Err(ApiError::BadRefreshToken);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/identity/.well-known/jwks.json`.
pub(crate) async fn jwks(State(app): State<Identity>) -> Response {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        Json(app.jwks()),
    )
        .into_response()
}

fn refresh_token_hash(token: &str) -> Result<String, ApiError> {
    if token.is_empty() {
        return Err(ApiError::invalid("refresh_token", "must not be empty"));
    }
    if token.len() > MAX_REFRESH_TOKEN_CHARS {
        return Err(ApiError::BadRefreshToken);
    }
    Ok(sha256_hex(token))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates a refresh token for `user_id`, stores its hash, and returns the token.
async fn store_refresh_token(
    tx: &mut tideway_store::Transaction<'static, sqlx::Any>,
    app: &Identity,
    user_id: &str,
) -> Result<String, ApiError> {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let ttl_millis = i64::try_from(app.inner.settings.refresh_ttl.as_millis()).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, user_id, expires_at, revoked, created_at) \
         VALUES ($1, $2, $3, 0, $4)",
    )
    .bind(sha256_hex(&token))
    .bind(user_id)
    .bind(now_millis().saturating_add(ttl_millis))
    .bind(now_text())
    .execute(&mut **tx)
    .await?;
    Ok(token)
}

/// Signs an access token for `user` and pairs it with `refresh_token`.
fn issue(app: &Identity, user: &UserRow, refresh_token: String) -> Result<TokenResponse, ApiError> {
    let settings = &app.inner.settings;
    let roles: Vec<&str> = user.roles.iter().map(String::as_str).collect();
    let claims = TokenSigner::claims(
        &user.id,
        &user.email,
        &roles,
        &settings.issuer,
        &settings.audience,
        settings.access_ttl,
    );
    let access_token = app
        .inner
        .signer
        .sign(&claims)
        .map_err(|err| ApiError::Internal(err.into()))?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: settings.access_ttl.as_secs(),
        refresh_token,
        refresh_expires_in: settings.refresh_ttl.as_secs(),
    })
}

/// Token lifetimes and the claims every token carries.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            refresh_token_hash(""),
            Err(ApiError::Invalid {
                field: "refresh_token",
                ..
            })
        ));
        assert!(matches!(
            refresh_token_hash(&"x".repeat(300)),
            Err(ApiError::BadRefreshToken)
        ));
    }
}
