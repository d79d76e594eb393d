//! Login, refresh (rotating, in families), logout, sign out everywhere, and the JWKS.
//!
//! A refresh token is 32 random bytes (base64url); only its SHA-256 is stored, so a copy of
//! the database cannot be replayed. Every token belongs to a family: the session one login
//! began. Each refresh consumes the token it was given, in the same transaction that stores
//! its successor in the same family, so a token works at most once even when two requests
//! race. A consumed token presented again is reuse — a stolen copy, or a replay — and
//! revokes the whole family, so whichever of the thief and the user refreshes next is
//! signed out and the other one's tokens die with it. A family ends at its absolute expiry
//! (`identity.session_lifetime_secs`) however often it is refreshed; a logout ends its
//! family; "sign out everywhere" ends every family of the user.

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
use tideway_runtime::{
    Problem,
    auth::{AuthUser, TokenSigner},
    extract::Json,
};
use tideway_store::{Row, Transaction};

use crate::{
    ApiError, Identity, now_millis, now_text,
    users::{self, UserRow},
};

/// Refresh tokens we issue are 43 characters; anything much longer is not one of ours.
const MAX_REFRESH_TOKEN_CHARS: usize = 256;

/// `POST /api/v1/identity/login`: a new session (family) and its first tokens.
#[tracing::instrument(skip_all)]
#[utoipa::path(
    post,
    path = "/api/v1/identity/login",
    tag = "identity",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "An access and a refresh token", body = TokenResponse),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem),
        (status = 503, response = Problem),
    )
)]
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
    let Some(user) = user.filter(|user| matches && !user.disabled) else {
        tracing::info!("a login failed");
        return Err(ApiError::BadCredentials);
    };
    let now = now_millis();
    let family_expires = now.saturating_add(millis(app.inner.settings.session_lifetime));
    let family = uuid::Uuid::new_v4().to_string();
    let mut tx = app.db().begin().await?;
    sqlx::query(
        "INSERT INTO refresh_families (id, user_id, expires_at, revoked, created_at) \
         VALUES ($1, $2, $3, 0, $4)",
    )
    .bind(&family)
    .bind(&user.id)
    .bind(family_expires)
    .bind(now_text())
    .execute(&mut *tx)
    .await?;
    let (refresh_token, expires_at) =
        store_refresh_token(&mut tx, &app, &user.id, &family, family_expires).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "a user logged in");
    issue(&app, &user, refresh_token, expires_at - now).map(Json)
}

/// `POST /api/v1/identity/refresh`: new tokens for a live refresh token, which is consumed. A
/// consumed token presented again revokes its family.
#[tracing::instrument(skip_all)]
#[utoipa::path(
    post,
    path = "/api/v1/identity/refresh",
    tag = "identity",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens; the presented refresh token is used up", body = TokenResponse),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem),
    )
)]
pub(crate) async fn refresh(
    State(app): State<Identity>,
    Json(request): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let hash = refresh_token_hash(&request.refresh_token)?;
    let now = now_millis();
    let mut tx = app.db().begin().await?;
    let found = sqlx::query(
        "SELECT t.user_id, t.family_id, t.revoked, t.expires_at, \
                f.expires_at AS family_expires_at, f.revoked AS family_revoked \
         FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
         WHERE t.token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = found else {
        tracing::info!("an unknown refresh token was refused");
        return Err(ApiError::BadRefreshToken);
    };
    let user_id: String = row.try_get("user_id")?;
    let family: String = row.try_get("family_id")?;
    let family_expires: i64 = row.try_get("family_expires_at")?;
    let live = row.try_get::<i64, _>("family_revoked")? == 0
        && family_expires > now
        && row.try_get::<i64, _>("expires_at")? > now;
    if row.try_get::<i64, _>("revoked")? != 0 {
        if live {
            reuse_detected(tx, &user_id, &family).await?;
        }
        return Err(ApiError::BadRefreshToken);
    }
    if !live {
        tracing::info!(user_id, "an expired or revoked refresh token was refused");
        return Err(ApiError::BadRefreshToken);
    }
    // The token is consumed here; a request racing for it finds it consumed (reuse).
    let consumed = sqlx::query(
        "UPDATE refresh_tokens SET revoked = 1 \
         WHERE token_hash = $1 AND revoked = 0 RETURNING user_id",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    if consumed.is_none() {
        reuse_detected(tx, &user_id, &family).await?;
        return Err(ApiError::BadRefreshToken);
    }
    let user = match users::find_by_id(&mut *tx, &user_id).await? {
        Some(user) if !user.disabled => user,
        _ => {
            revoke_family(&mut tx, &family).await?;
            tx.commit().await?;
            return Err(ApiError::BadRefreshToken);
        }
    };
    let (refresh_token, expires_at) =
        store_refresh_token(&mut tx, &app, &user.id, &family, family_expires).await?;
    let response = issue(&app, &user, refresh_token, expires_at - now)?;
    tx.commit().await?;
    Ok(Json(response))
}

/// A consumed token came back: the session is compromised, so all of it ends.
async fn reuse_detected(
    mut tx: Transaction<'static, sqlx::Any>,
    user_id: &str,
    family: &str,
) -> Result<(), ApiError> {
    revoke_family(&mut tx, family).await?;
    tx.commit().await?;
    tracing::warn!(
        user_id,
        family,
        "a consumed refresh token was presented again; its session is revoked"
    );
    Ok(())
}

/// Revokes `family` and every token in it.
async fn revoke_family(
    tx: &mut Transaction<'static, sqlx::Any>,
    family: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE refresh_families SET revoked = 1 WHERE id = $1")
        .bind(family)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE refresh_tokens SET revoked = 1 WHERE family_id = $1 AND revoked = 0")
        .bind(family)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Revokes every session of `user_id`.
pub(crate) async fn revoke_user_sessions(
    tx: &mut Transaction<'static, sqlx::Any>,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE refresh_families SET revoked = 1 WHERE user_id = $1 AND revoked = 0")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE refresh_tokens SET revoked = 1 WHERE user_id = $1 AND revoked = 0")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `POST /api/v1/identity/logout`: ends the session of the refresh token (again, if it already
/// was): the token and every token of its family stop working.
#[tracing::instrument(skip_all)]
#[utoipa::path(
    post,
    path = "/api/v1/identity/logout",
    tag = "identity",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The session ended"),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
    )
)]
pub(crate) async fn logout(
    State(app): State<Identity>,
    Json(request): Json<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let hash = refresh_token_hash(&request.refresh_token)?;
    let mut tx = app.db().begin().await?;
    let found = sqlx::query("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = found else {
        return Err(ApiError::BadRefreshToken);
    };
    match row.try_get::<Option<String>, _>("family_id")? {
        Some(family) => revoke_family(&mut tx, &family).await?,
        None => {
            sqlx::query("UPDATE refresh_tokens SET revoked = 1 WHERE token_hash = $1")
                .bind(&hash)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/identity/logout-all` (with an access token): ends every session of the user.
/// Access tokens already issued stay valid until they expire.
#[tracing::instrument(skip_all)]
#[utoipa::path(
    post,
    path = "/api/v1/identity/logout-all",
    tag = "identity",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session of the user ended"),
        (status = 401, response = Problem),
    )
)]
pub(crate) async fn logout_all(
    State(app): State<Identity>,
    AuthUser(claims): AuthUser,
) -> Result<StatusCode, ApiError> {
    let mut tx = app.db().begin().await?;
    revoke_user_sessions(&mut tx, &claims.sub).await?;
    tx.commit().await?;
    tracing::info!(user_id = %claims.sub, "a user signed out everywhere");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/identity/.well-known/jwks.json`.
#[utoipa::path(
    get,
    path = "/api/v1/identity/.well-known/jwks.json",
    tag = "identity",
    responses(
        (status = 200, description = "The public keys that verify access tokens (a JWK set)", body = Object),
    )
)]
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

/// Creates a refresh token for `user_id` in `family`, stores its hash, and returns the
/// token with its expiry (Unix milliseconds): its own lifetime, or the family's end if
/// sooner.
async fn store_refresh_token(
    tx: &mut Transaction<'static, sqlx::Any>,
    app: &Identity,
    user_id: &str,
    family: &str,
    family_expires: i64,
) -> Result<(String, i64), ApiError> {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let expires_at = now_millis()
        .saturating_add(millis(app.inner.settings.refresh_ttl))
        .min(family_expires);
    sqlx::query(
        "INSERT INTO refresh_tokens \
         (token_hash, user_id, expires_at, revoked, created_at, family_id) \
         VALUES ($1, $2, $3, 0, $4, $5)",
    )
    .bind(sha256_hex(&token))
    .bind(user_id)
    .bind(expires_at)
    .bind(now_text())
    .bind(family)
    .execute(&mut **tx)
    .await?;
    Ok((token, expires_at))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Signs an access token for `user` and pairs it with `refresh_token`, which expires in
/// `refresh_left_ms`.
fn issue(
    app: &Identity,
    user: &UserRow,
    refresh_token: String,
    refresh_left_ms: i64,
) -> Result<TokenResponse, ApiError> {
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
        refresh_expires_in: u64::try_from(refresh_left_ms / 1000).unwrap_or(0),
    })
}

/// Token lifetimes and the claims every token carries.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_lifetime: Duration,
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
