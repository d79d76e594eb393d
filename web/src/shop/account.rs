//! Register, sign in and sign out. The identity service's answers to a refused form appear
//! beside the fields they name.

use axum::{
    Form,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::CookieJar;
use maud::{Markup, html};
use serde::Deserialize;
use tideway_identity_api::{LoginRequest, RegisterRequest};

use crate::{
    AppState,
    error::PageError,
    layout::{Field, FormErrors, Section, csrf_field, form_error, page},
    session::{self, Visitor},
};

/// A local path to go back to after signing in; anything else goes home.
///
/// Only a path of this site: it starts with one `/` (not `//`, which names another host),
/// holds no backslash (some browsers read it as `/`) and no control or whitespace character
/// (browsers drop tabs and newlines from a URL, so `/\t/evil.example` would become
/// `//evil.example`).
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(|c| c.is_control() || c.is_whitespace())
                && !path.starts_with("/login")
                && !path.starts_with("/register") =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The query of the sign-in page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
    email: Option<String>,
    registered: Option<String>,
}

/// The sign-in form as posted.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// `GET /login`.
pub(crate) async fn login_form(
    State(state): State<AppState>,
    visitor: Visitor,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Markup {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let notice = query
        .registered
        .is_some()
        .then_some("Your account is ready. Sign in to start shopping.");
    login_page(
        &state,
        &visitor,
        query.email.as_deref().unwrap_or(""),
        &safe_next(query.next.as_deref()),
        &FormErrors::default(),
        notice,
    )
}

fn login_page(
    state: &AppState,
    visitor: &Visitor,
    email: &str,
    next: &str,
    errors: &FormErrors,
    notice: Option<&str>,
) -> Markup {
    let body = html! {
        section.narrow {
            h1 { "Sign in" }
            @if let Some(notice) = notice {
                p.notice role="status" { (notice) }
            }
            (form_error(errors))
            form.stack method="post" action="/login" novalidate {
                (csrf_field(visitor))
                input type="hidden" name="next" value=(next);
                (Field { name: "email", label: "Email", kind: "email", value: email,
                    autocomplete: "username", hint: None }.render(errors))
                (Field { name: "password", label: "Password", kind: "password", value: "",
                    autocomplete: "current-password", hint: None }.render(errors))
                button type="submit" { "Sign in" }
            }
            p { "New here? " a href="/register" { "Create an account" } "." }
            @if !state.demo_logins.is_empty() {
                p.hint {
                    "Demo accounts: "
                    @for (i, demo) in state.demo_logins.iter().enumerate() {
                        @if i > 0 { ", " }
                        (demo.email) " / " (demo.password)
                    }
                    "."
                }
            }
        }
    };
    page("Sign in", visitor, Section::Account, body)
}

/// `POST /login`.
pub(crate) async fn login(
    State(state): State<AppState>,
    visitor: Visitor,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = safe_next(form.next.as_deref());
    let request = LoginRequest {
        email: form.email.trim().to_owned(),
        password: form.password.clone(),
    };
    match state.api.identity.login(&request).await {
        Ok(tokens) => Ok((
            session::sign_in(&state.cookies, jar, &tokens),
            Redirect::to(&next),
        )
            .into_response()),
        Err(err) => match FormErrors::from_client_error(&err) {
            Some(mut errors) => {
                if err.status() == Some(StatusCode::UNAUTHORIZED) {
                    errors =
                        FormErrors::message("That email and password do not match an account.");
                }
                Ok((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    login_page(&state, &visitor, &form.email, &next, &errors, None),
                )
                    .into_response())
            }
            None => Err(PageError::from_client(err, "/login")),
        },
    }
}

/// The registration form as posted.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RegisterForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// `GET /register`.
pub(crate) async fn register_form(visitor: Visitor) -> Markup {
    register_page(&visitor, &RegisterForm::default(), &FormErrors::default())
}

fn register_page(visitor: &Visitor, form: &RegisterForm, errors: &FormErrors) -> Markup {
    let body = html! {
        section.narrow {
            h1 { "Create an account" }
            (form_error(errors))
            form.stack method="post" action="/register" novalidate {
                (csrf_field(visitor))
                (Field { name: "name", label: "Name", kind: "text", value: &form.name,
                    autocomplete: "name", hint: None }.render(errors))
                (Field { name: "email", label: "Email", kind: "email", value: &form.email,
                    autocomplete: "email", hint: None }.render(errors))
                (Field { name: "password", label: "Password", kind: "password", value: "",
                    autocomplete: "new-password", hint: Some("At least 10 characters, with a letter and a digit.") }.render(errors))
                button type="submit" { "Create account" }
            }
            p { "Already have an account? " a href="/login" { "Sign in" } "." }
        }
    };
    page("Create an account", visitor, Section::Account, body)
}

/// `POST /register`: creates the account, then asks the user to sign in.
pub(crate) async fn register(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<RegisterForm>,
) -> Result<Response, PageError> {
    let request = RegisterRequest {
        email: form.email.trim().to_owned(),
        password: form.password.clone(),
        name: form.name.trim().to_owned(),
    };
    match state.api.identity.register(&request).await {
        Ok(user) => {
            let query = serde_urlencoded::to_string([("registered", "1"), ("email", &user.email)])
                .unwrap_or_default();
            Ok(Redirect::to(&format!("/login?{query}")).into_response())
        }
        Err(err) => match FormErrors::from_client_error(&err) {
            Some(errors) => Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                register_page(&visitor, &form, &errors),
            )
                .into_response()),
            None => Err(PageError::from_client(err, "/register")),
        },
    }
}

/// `POST /logout`: ends this session (its refresh token and every one rotated from it) and
/// forgets the cookies.
pub(crate) async fn logout(State(state): State<AppState>, jar: CookieJar) -> Response {
    let (jar, refresh) = session::sign_out(&state.cookies, jar);
    if let Some(refresh) = refresh
        && let Err(err) = state.api.identity.logout(&refresh).await
    {
        tracing::debug!(error = %err, "the refresh token could not be revoked");
    }
    (jar, Redirect::to("/")).into_response()
}

/// `GET /account`: who is signed in, and the ways to sign out.
pub(crate) async fn account(visitor: Visitor) -> Result<Markup, PageError> {
    let Some(user) = &visitor.user else {
        return Err(PageError::SignIn {
            next: "/account".to_owned(),
        });
    };
    let body = html! {
        section.narrow {
            h1 { "Your account" }
            p { "Signed in as " strong { (user.claims.email) } "." }
            form.stack method="post" action="/logout" {
                (csrf_field(&visitor))
                button type="submit" { "Sign out" }
            }
            h2 { "Every device" }
            p {
                "Signed in on another computer or phone, or left a session open somewhere? "
                "This signs you out on every device; each has to sign in again."
            }
            form.stack method="post" action="/logout/everywhere" {
                (csrf_field(&visitor))
                button type="submit" { "Sign out everywhere" }
            }
        }
    };
    Ok(page("Your account", &visitor, Section::Account, body))
}

/// `POST /logout/everywhere`: ends every session of the user, then this one's cookies.
pub(crate) async fn logout_everywhere(
    State(state): State<AppState>,
    visitor: Visitor,
    jar: CookieJar,
) -> Result<Response, PageError> {
    let Some(user) = &visitor.user else {
        return Err(PageError::SignIn {
            next: "/account".to_owned(),
        });
    };
    state
        .api
        .identity
        .logout_all(&user.token)
        .await
        .map_err(|err| PageError::from_client(err, "/account"))?;
    let (jar, _) = session::sign_out(&state.cookies, jar);
    Ok((jar, Redirect::to("/")).into_response())
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/basket")), "/basket");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(Some("/login")), "/");
        assert_eq!(safe_next(None), "/");
        // `/%09/evil.example` decoded: browsers drop the tab and read `//evil.example`.
        for bad in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r//x",
            "/ /x",
            "/\u{a0}/x",
            "/\u{7f}",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(Some("/orders/1?x=%09")), "/orders/1?x=%09");
    }
}
