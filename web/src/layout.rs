//! The page shell and the small pieces every page uses: navigation, form fields with their
//! errors, money.

use std::collections::HashMap;

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use tideway_runtime::{Problem, client::ClientError};

use crate::{assets, security::CSRF_FIELD, session::Visitor};

/// Which part of the site a page belongs to (marked in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Home,
    Shop,
    Basket,
    Orders,
    Account,
    Ops,
    None,
}

/// htmx swaps 422 answers (forms with errors) and error pages too, not only 2xx. It never
/// evaluates script from attributes or answers and adds no inline style, so the
/// Content-Security-Policy needs neither `unsafe-eval` nor `unsafe-inline`.
const HTMX_CONFIG: &str = r#"{"allowEval":false,"allowScriptTags":false,"includeIndicatorStyles":false,"responseHandling":[{"code":"204","swap":false},{"code":"[23]..","swap":true},{"code":"[45]..","swap":true,"error":true}],"scrollBehavior":"auto"}"#;

/// A whole page: head, navigation, `body` in `<main>`, footer.
pub(crate) fn page(title: &str, visitor: &Visitor, section: Section, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=(HTMX_CONFIG);
                title { (title) " · Tideway" }
                link rel="stylesheet" href=(assets::STYLESHEET);
                link rel="icon" href=(assets::ICON) type="image/svg+xml";
                script src=(assets::HTMX) defer {}
                script src=(assets::HTMX_SSE) defer {}
            }
            body hx-ext="sse" {
                a.skip href="#main" { "Skip to content" }
                header.site {
                    nav.bar aria-label="Main" {
                        a.brand href="/" aria-current=[current(section == Section::Home)] {
                            (PreEscaped(LOGO)) span { "Tideway" }
                        }
                        ul.links {
                            li { a href="/catalog" aria-current=[current(section == Section::Shop)] { "Shop" } }
                            li { a href="/basket" aria-current=[current(section == Section::Basket)] { "Basket" } }
                            li { a href="/orders" aria-current=[current(section == Section::Orders)] { "Orders" } }
                            @if visitor.user.is_some() {
                                li { a href="/notifications" { "Notifications" } }
                            }
                            @if visitor.user.as_ref().is_some_and(|u| u.is_admin()) {
                                li { a href="/ops" aria-current=[current(section == Section::Ops)] { "Ops" } }
                            }
                        }
                        div.account {
                            @match &visitor.user {
                                Some(user) => {
                                    a.who href="/account" title=(user.claims.email)
                                        aria-current=[current(section == Section::Account)] { (user.claims.email) }
                                    form method="post" action="/logout" {
                                        (csrf_field(visitor))
                                        button.link type="submit" { "Sign out" }
                                    }
                                }
                                None => {
                                    a href="/login" aria-current=[current(section == Section::Account)] { "Sign in" }
                                    a.button.small href="/register" { "Register" }
                                }
                            }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
                footer.site {
                    p {
                        "Tideway — an online shop built as microservices in Rust. "
                        "Test cards: 4242 4242 4242 4242 (approved), 4000 0000 0000 0002 (declined)."
                    }
                }
            }
        }
    }
}

/// The hidden field that carries the visitor's CSRF token; every form that posts has one.
pub(crate) fn csrf_field(visitor: &Visitor) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(visitor.csrf); }
}

fn current(yes: bool) -> Option<&'static str> {
    yes.then_some("page")
}

const LOGO: &str = r##"<svg aria-hidden="true" width="28" height="28" viewBox="0 0 32 32"><rect width="32" height="32" rx="8" fill="#0f766e"/><path d="M4 19c4-4 8-4 12 0s8 4 12 0v5c-4 4-8 4-12 0s-8-4-12 0z" fill="#99f6e4"/><path d="M4 12c4-4 8-4 12 0s8 4 12 0v4c-4 4-8 4-12 0s-8-4-12 0z" fill="#5eead4"/></svg>"##;

/// An amount of money given in minor units.
pub(crate) fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let amount = format!("{}.{:02}", abs / 100, abs % 100);
    match currency {
        "EUR" => format!("{sign}€{amount}"),
        "USD" => format!("{sign}${amount}"),
        "GBP" => format!("{sign}£{amount}"),
        other => format!("{sign}{amount} {other}"),
    }
}

/// What a form's submission was refused for: a message per field and one for the form.
#[derive(Debug, Clone, Default)]
pub(crate) struct FormErrors {
    pub(crate) fields: HashMap<String, String>,
    pub(crate) form: Option<String>,
}

impl FormErrors {
    /// The API's problem details, shown beside the fields they name.
    pub(crate) fn from_problem(problem: &Problem) -> Self {
        let mut errors = Self::default();
        for param in &problem.invalid_params {
            errors
                .fields
                .entry(param.name.clone())
                .or_insert_with(|| capitalise(&param.reason));
        }
        if errors.fields.is_empty() {
            errors.form = Some(
                problem
                    .detail
                    .clone()
                    .unwrap_or_else(|| problem.title.clone()),
            );
        }
        errors
    }

    /// The errors of a refused call, or `None` when the call failed for another reason
    /// (the page shows an error page then).
    pub(crate) fn from_client_error(err: &ClientError) -> Option<Self> {
        match err {
            ClientError::Status {
                status, problem, ..
            } if status.is_client_error() => Some(match problem {
                Some(problem) => Self::from_problem(problem),
                None => Self::message(format!("The request was refused ({status}).")),
            }),
            _ => None,
        }
    }

    /// A refusal because something the request needs is down (a 503
    /// `/problems/dependency-unavailable` that placed nothing): its detail, to show on the
    /// form so the visitor can try again from where they were.
    pub(crate) fn from_dependency_unavailable(err: &ClientError) -> Option<Self> {
        match err {
            ClientError::Status {
                status,
                problem: Some(problem),
                ..
            } if *status == StatusCode::SERVICE_UNAVAILABLE
                && problem.kind == "/problems/dependency-unavailable" =>
            {
                let detail = problem.detail.as_deref().unwrap_or(&problem.title);
                Some(Self::message(format!("{}.", capitalise(detail))))
            }
            _ => None,
        }
    }

    pub(crate) fn message(message: impl Into<String>) -> Self {
        Self {
            fields: HashMap::new(),
            form: Some(message.into()),
        }
    }

    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The form-wide error, announced to screen readers.
pub(crate) fn form_error(errors: &FormErrors) -> Markup {
    html! {
        @if let Some(message) = &errors.form {
            p.alert role="alert" { (message) }
        }
    }
}

/// A labelled input with its error beside it (`aria-invalid`, `aria-describedby`).
pub(crate) struct Field<'a> {
    pub(crate) name: &'a str,
    pub(crate) label: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) value: &'a str,
    pub(crate) autocomplete: &'a str,
    pub(crate) hint: Option<&'a str>,
}

impl Field<'_> {
    pub(crate) fn render(&self, errors: &FormErrors) -> Markup {
        let id = format!("field-{}", self.name);
        let error = errors.field(self.name);
        let error_id = format!("{id}-error");
        let hint_id = format!("{id}-hint");
        let described = match (error.is_some(), self.hint.is_some()) {
            (true, true) => Some(format!("{error_id} {hint_id}")),
            (true, false) => Some(error_id.clone()),
            (false, true) => Some(hint_id.clone()),
            (false, false) => None,
        };
        html! {
            div.field.invalid[error.is_some()] {
                label for=(id) { (self.label) }
                input id=(id) name=(self.name) type=(self.kind) value=(self.value)
                    autocomplete=(self.autocomplete) required
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[described];
                @if let Some(hint) = self.hint {
                    small.hint id=(hint_id) { (hint) }
                }
                @if let Some(error) = error {
                    small.error id=(error_id) { (error) }
                }
            }
        }
    }
}

/// A status as a coloured badge.
pub(crate) fn badge(status: &str) -> Markup {
    let label = capitalise(&status.replace('_', " "));
    html! { span.badge data-status=(status) { (label) } }
}

/// An RFC 3339 time shown briefly (date and time to the second, UTC).
pub(crate) fn when(rfc3339: &str) -> String {
    match time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => rfc3339.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_written_with_two_decimals() {
        assert_eq!(money(1250, "EUR"), "€12.50");
        assert_eq!(money(5, "USD"), "$0.05");
        assert_eq!(money(-199, "EUR"), "-€1.99");
        assert_eq!(money(100, "CHF"), "1.00 CHF");
    }

    #[test]
    fn problems_become_errors_beside_their_fields() {
        let problem = Problem::invalid_field("email", "must be an email address");
        let errors = FormErrors::from_problem(&problem);
        assert_eq!(errors.field("email"), Some("Must be an email address"));
        assert!(errors.form.is_none());
        let conflict = Problem::conflict("that email is taken");
        let errors = FormErrors::from_problem(&conflict);
        assert_eq!(errors.form.as_deref(), Some("that email is taken"));
    }

    #[test]
    fn fields_with_errors_point_at_them() {
        let errors = FormErrors::from_problem(&Problem::invalid_field("email", "is taken"));
        let markup = Field {
            name: "email",
            label: "Email",
            kind: "email",
            value: "a@b.c",
            autocomplete: "email",
            hint: None,
        }
        .render(&errors)
        .into_string();
        assert!(markup.contains(r#"aria-invalid="true""#), "{markup}");
        assert!(markup.contains(r#"aria-describedby="field-email-error""#));
        assert!(markup.contains("Is taken"));
        assert!(markup.contains(r#"<label for="field-email">Email</label>"#));
    }
}
