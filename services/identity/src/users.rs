//! Users: the rules for emails, passwords, names and roles; registration; `/me`; and the
//! SQL that reads and writes the `users` table.

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tideway_identity_api::{CUSTOMER_ROLE, PREFIX, RegisterRequest, UserView};
use tideway_runtime::{
    Problem,
    auth::{ADMIN_ROLE, AuthError, AuthUser},
    extract::{Json, Path},
};
use tideway_store::{AnyRow, Row};

use crate::{ApiError, Identity, now_text};

const MAX_EMAIL_CHARS: usize = 254;
const MIN_PASSWORD_CHARS: usize = 10;
const MAX_PASSWORD_CHARS: usize = 128;
const MAX_NAME_CHARS: usize = 80;
const MAX_ROLE_CHARS: usize = 32;

/// A user as stored.
#[derive(Debug, Clone)]
pub(crate) struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub created_at: String,
    /// A disabled account cannot sign in or refresh.
    pub disabled: bool,
}

impl UserRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let roles: String = row.try_get("roles")?;
        Ok(Self {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            password_hash: row.try_get("password_hash")?,
            roles: parse_roles(&roles),
            created_at: row.try_get("created_at")?,
            disabled: row.try_get::<i64, _>("disabled")? != 0,
        })
    }

    pub fn view(&self) -> UserView {
        UserView {
            id: self.id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            roles: self.roles.clone(),
            created_at: self.created_at.clone(),
        }
    }
}

/// Roles as stored: comma-separated (role names cannot contain commas).
pub(crate) fn join_roles(roles: &[String]) -> String {
    roles.join(",")
}

fn parse_roles(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The normalised email (trimmed, lower-cased), or why it is refused.
pub fn validate_email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("must not be empty".into());
    }
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(format!("must be at most {MAX_EMAIL_CHARS} characters"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("must contain exactly one @".into());
    };
    if local.is_empty() {
        return Err("must have a name before the @".into());
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return Err("must have a domain with a dot after the @, such as example.com".into());
    }
    Ok(email)
}

/// Whether `password` is acceptable for the (normalised) `email`, or why not.
pub fn validate_password(password: &str, email: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    if !password.chars().any(char::is_alphabetic) {
        return Err("must contain at least one letter".into());
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        return Err("must contain at least one digit".into());
    }
    if password.trim().to_lowercase() == email {
        return Err("must not be the email".into());
    }
    Ok(())
}

/// The trimmed name, or why it is refused.
pub fn validate_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err("must not be empty".into());
    }
    if chars > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(name.to_owned())
}

/// Whether `role` is a role name: 1–32 of `a-z`, `0-9`, `_`, `-`.
pub fn validate_role(role: &str) -> Result<(), String> {
    let ok = !role.is_empty()
        && role.len() <= MAX_ROLE_CHARS
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a role name of 1 to {MAX_ROLE_CHARS} characters among a-z, 0-9, _ and -"
        ))
    }
}

/// A registration whose every field has passed the rules.
struct NewUser {
    email: String,
    password: String,
    name: String,
}

impl TryFrom<RegisterRequest> for NewUser {
    type Error = ApiError;

    fn try_from(request: RegisterRequest) -> Result<Self, ApiError> {
        let email =
            validate_email(&request.email).map_err(|reason| ApiError::invalid("email", reason))?;
        validate_password(&request.password, &email)
            .map_err(|reason| ApiError::invalid("password", reason))?;
        let name =
            validate_name(&request.name).map_err(|reason| ApiError::invalid("name", reason))?;
        Ok(Self {
            email,
            password: request.password,
            name,
        })
    }
}

/// `POST /api/v1/identity/register`: 201 with the user and its `Location`.
#[tracing::instrument(skip_all)]
#[utoipa::path(
    post,
    path = "/api/v1/identity/register",
    tag = "identity",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The new user", body = UserView),
        (status = 400, response = Problem),
        (status = 409, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn register(
    State(app): State<Identity>,
    Json(request): Json<RegisterRequest>,
) -> Result<Response, ApiError> {
    let new = NewUser::try_from(request)?;
    let password_hash = app.inner.hasher.hash(new.password).await?;
    let user = UserRow {
        id: uuid::Uuid::now_v7().to_string(),
        email: new.email,
        name: new.name,
        password_hash,
        roles: vec![CUSTOMER_ROLE.to_owned()],
        created_at: now_text(),
        disabled: false,
    };
    insert(app.db().pool(), &user).await.map_err(|err| {
        if tideway_store::is_unique_violation(&err) {
            ApiError::DuplicateEmail
        } else {
            err.into()
        }
    })?;
    tracing::info!(user_id = %user.id, "registered a user");
    let location = HeaderValue::from_str(&format!("{PREFIX}/users/{}", user.id))
        .map_err(|err| ApiError::Internal(err.into()))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(user.view()),
    )
        .into_response())
}

/// `GET /api/v1/identity/me`.
#[utoipa::path(
    get,
    path = "/api/v1/identity/me",
    tag = "identity",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = UserView),
        (status = 401, response = Problem),
    )
)]
pub(crate) async fn me(
    State(app): State<Identity>,
    AuthUser(claims): AuthUser,
) -> Result<Json<UserView>, ApiError> {
    let user = find_by_id(app.db().pool(), &claims.sub)
        .await?
        .ok_or(ApiError::UnknownUser)?;
    Ok(Json(user.view()))
}

/// `GET /api/v1/identity/users/{id}`: the user itself or an admin.
#[utoipa::path(
    get,
    path = "/api/v1/identity/users/{id}",
    tag = "identity",
    params(("id" = String, Path, description = "The user id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
    )
)]
pub(crate) async fn user(
    State(app): State<Identity>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    if claims.sub != id && !claims.has_role(ADMIN_ROLE) {
        return Err(AuthError::Forbidden(ADMIN_ROLE.to_owned()).into());
    }
    let user = find_by_id(app.db().pool(), &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(user.view()))
}

pub(crate) async fn insert<'e, E>(executor: E, user: &UserRow) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, roles, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(&user.password_hash)
    .bind(join_roles(&user.roles))
    .bind(&user.created_at)
    .execute(executor)
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all, err)]
pub(crate) async fn find_by_email<'e, E>(
    executor: E,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "SELECT id, email, name, password_hash, roles, created_at, disabled \
         FROM users WHERE email = $1",
    )
    .bind(email)
    .fetch_optional(executor)
    .await?
    .as_ref()
    .map(UserRow::from_row)
    .transpose()
}

#[tracing::instrument(skip_all, fields(user_id = id), err)]
pub(crate) async fn find_by_id<'e, E>(executor: E, id: &str) -> Result<Option<UserRow>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "SELECT id, email, name, password_hash, roles, created_at, disabled \
         FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?
    .as_ref()
    .map(UserRow::from_row)
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            validate_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "",
            "   ",
            "alice",
            "@example.com",
            "alice@example",
            "alice@@example.com",
            "a@b@example.com",
            "alice@.example.com",
            "alice@example.com.",
            "al ice@example.com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(243));
        assert_eq!(long.len(), 255);
        assert!(validate_email(&long).is_err());
        assert!(validate_email(&long[1..]).is_ok());
    }

    #[test]
    fn passwords_need_length_a_letter_and_a_digit() {
        let email = "alice@example.com";
        assert!(validate_password("abcdefghi1", email).is_ok());
        assert!(validate_password("abcdefgh1", email).is_err());
        assert!(validate_password(&format!("a1{}", "x".repeat(126)), email).is_ok());
        assert!(validate_password(&format!("a1{}", "x".repeat(127)), email).is_err());
        assert!(validate_password("abcdefghij", email).is_err());
        assert!(validate_password("1234567890", email).is_err());
        assert!(validate_password("Alice@Example.com", email).is_err());
        let email1 = "alice1@example.com";
        assert_eq!(
            validate_password("ALICE1@example.com", email1).unwrap_err(),
            "must not be the email"
        );
        // Characters, not bytes.
        assert!(validate_password("ééééééééé1", email).is_ok());
    }

    #[test]
    fn names_and_roles() {
        assert_eq!(validate_name("  Alice ").unwrap(), "Alice");
        assert!(validate_name(" ").is_err());
        assert!(validate_name(&"x".repeat(81)).is_err());
        assert!(validate_name(&"é".repeat(80)).is_ok());
        assert!(validate_name("a\u{0}b").is_err());
        assert!(validate_role("admin").is_ok());
        assert!(validate_role("Admin").is_err());
        assert!(validate_role("a,b").is_err());
        assert!(validate_role("").is_err());
        assert_eq!(
            parse_roles(&join_roles(&["a".into(), "b".into()])),
            ["a", "b"]
        );
    }
}
