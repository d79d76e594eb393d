//! What protects the pages in a browser: security headers on every answer, and a CSRF check
//! on every form post.
//!
//! * Headers: a Content-Security-Policy that allows scripts, styles, pictures and requests
//!   from this origin only (no inline script, no `eval`), `frame-ancestors 'none'`,
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`, a
//!   `Permissions-Policy` that turns off what the shop never uses, and HSTS when the public
//!   origin is `https`.
//! * CSRF: a random token in a cookie (`tw_csrf`, `__Host-tw_csrf` under TLS), repeated in a
//!   hidden field of every form (double submit). A POST whose `Origin` (or, without one, its
//!   `Referer`) names another site, or whose form token does not match its cookie, is refused
//!   with 403 before any handler runs. A page on another site can neither read the token nor
//!   set the cookie, so it cannot forge the form.

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine;
use maud::html;
use rand::RngCore;

use crate::{
    AppState,
    layout::{Section, page},
    session::Visitor,
};

/// The hidden form field carrying the token.
pub(crate) const CSRF_FIELD: &str = "csrf";
/// The header that may carry the token instead (scripts).
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// The largest form body read to find the token; every form of the shop is far smaller.
const MAX_FORM_BYTES: usize = 64 * 1024;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; font-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; object-src 'none'";
const PERMISSIONS: &str = "camera=(), microphone=(), geolocation=(), payment=(), usb=()";
const HSTS: &str = "max-age=31536000";

/// The origin pages are served from, and what follows from it.
#[derive(Debug, Clone)]
pub struct PublicOrigin {
    /// `scheme://host[:port]`, lower-cased, or `None` to take the request's `Host`.
    origin: Option<String>,
    secure: bool,
}

impl PublicOrigin {
    /// The origin of `url` (`https://shop.example`, `http://127.0.0.1:8080`), or why it is
    /// not one: a scheme `http` or `https`, a host, an optional port, nothing else.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim().trim_end_matches('/').to_ascii_lowercase();
        let (scheme, authority) = url
            .split_once("://")
            .ok_or_else(|| "an origin such as https://shop.example".to_owned())?;
        if scheme != "http" && scheme != "https" {
            return Err("an origin whose scheme is http or https".to_owned());
        }
        if authority.is_empty()
            || authority
                .chars()
                .any(|c| matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_whitespace())
        {
            return Err("an origin with a host and no path, such as https://shop.example".into());
        }
        Ok(Self {
            secure: scheme == "https",
            origin: Some(url),
        })
    }

    /// No configured origin: the request's own `Host`, plain HTTP cookies.
    pub fn from_request() -> Self {
        Self {
            origin: None,
            secure: false,
        }
    }

    /// Whether the shop is served over TLS (cookies `Secure` and `__Host-`, HSTS).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Whether `origin` (an `Origin` header, or the origin of a `Referer`) is this site.
    fn allows(&self, origin: &str, headers: &HeaderMap) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        match &self.origin {
            Some(ours) => origin == *ours,
            None => {
                let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
                    return false;
                };
                origin.split_once("://").is_some_and(|(scheme, authority)| {
                    matches!(scheme, "http" | "https")
                        && authority.eq_ignore_ascii_case(host.trim())
                })
            }
        }
    }
}

/// The origin part of a URL (`https://a.example:8443/x?y` → `https://a.example:8443`).
fn origin_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..scheme.len() + 3 + end])
}

/// The security headers, added to every answer that does not set its own.
pub(crate) async fn headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::CONTENT_SECURITY_POLICY, CSP);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "same-origin");
    set(
        header::HeaderName::from_static("permissions-policy"),
        PERMISSIONS,
    );
    set(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if state.origin.is_secure() {
        set(header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    response
}

/// The visitor's CSRF token, for the pages to put in their forms.
#[derive(Debug, Clone)]
pub(crate) struct CsrfToken(pub(crate) String);

/// Checks the token and the origin of every unsafe request, and gives every visitor a token.
pub(crate) async fn csrf(
    State(state): State<AppState>,
    jar: CookieJar,
    request: Request,
    next: Next,
) -> Response {
    let name = state.cookies.csrf;
    let existing = jar
        .get(name)
        .map(|c| c.value().to_owned())
        .filter(|value| is_token(value));
    let mut request = request;
    if !is_safe(request.method()) {
        match verify(&state, existing.as_deref(), request).await {
            Ok(checked) => request = checked,
            Err(refusal) => return refusal,
        }
    }
    let (token, fresh) = match existing {
        Some(token) => (token, false),
        None => (new_token(), true),
    };
    request.extensions_mut().insert(CsrfToken(token.clone()));
    let mut response = next.run(request).await;
    if fresh {
        let cookie = Cookie::build((name, token))
            .path("/")
            .http_only(true)
            .secure(state.cookies.secure)
            .same_site(SameSite::Lax)
            .build();
        if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// 32 random bytes, base64url: 43 characters.
fn new_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn is_token(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0_u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The request back (its body read and restored) when its origin and token are right.
async fn verify(
    state: &AppState,
    cookie: Option<&str>,
    request: Request,
) -> Result<Request, Response> {
    let headers = request.headers();
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("null").to_owned());
    let referer = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A browser sends `Origin` with every form post; `Referer` stands in for old ones.
    // Neither (a non-browser client) leaves the token to decide.
    let claimed = match (&origin, &referer) {
        (Some(origin), _) => Some(origin.as_str()),
        (None, Some(referer)) => Some(origin_of(referer).unwrap_or("null")),
        (None, None) => None,
    };
    if let Some(claimed) = claimed
        && !state.origin.allows(claimed, headers)
    {
        tracing::info!(origin = claimed, "a cross-site form post was refused");
        return Err(refused("This form was sent from another site."));
    }
    let Some(cookie) = cookie else {
        return Err(refused("Your session has no form token yet."));
    };
    if let Some(token) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return if same(token, cookie) {
            Ok(request)
        } else {
            Err(refused("The form token does not match."))
        };
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(refused("The form token is missing."));
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response());
    };
    let token = form_urlencoded_value(&bytes, CSRF_FIELD);
    if !token.is_some_and(|token| same(&token, cookie)) {
        return Err(refused("The form token is missing or does not match."));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The first value of `name` in a form body.
fn form_urlencoded_value(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// 403 with a page saying what to do.
fn refused(why: &str) -> Response {
    let body = html! {
        section.error-page {
            p.code { "403" }
            h1 { "This form cannot be accepted" }
            p { (why) " Reload the page and send the form again." }
            p.actions {
                a.button href="/" { "Go to the home page" }
            }
        }
    };
    (
        StatusCode::FORBIDDEN,
        page("Form refused", &Visitor::default(), Section::None, body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_parsed_strictly() {
        let origin = PublicOrigin::parse("https://Shop.Example/").unwrap();
        assert!(origin.is_secure());
        assert_eq!(origin.origin.as_deref(), Some("https://shop.example"));
        assert!(
            !PublicOrigin::parse("http://127.0.0.1:8080")
                .unwrap()
                .is_secure()
        );
        for bad in [
            "shop.example",
            "ftp://shop.example",
            "https://",
            "https://shop.example/path",
            "https://user@shop.example",
            "https://shop.example?x",
        ] {
            assert!(PublicOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_this_site_is_allowed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let by_host = PublicOrigin::from_request();
        assert!(by_host.allows("http://127.0.0.1:8080", &headers));
        assert!(!by_host.allows("http://127.0.0.1:8081", &headers));
        assert!(!by_host.allows("http://evil.example", &headers));
        assert!(!by_host.allows("null", &headers));
        let configured = PublicOrigin::parse("https://shop.example").unwrap();
        assert!(configured.allows("https://shop.example", &headers));
        assert!(!configured.allows("http://shop.example", &headers));
        assert!(!configured.allows("https://shop.example.evil", &headers));
        assert_eq!(
            origin_of("https://a.example:8443/x?y"),
            Some("https://a.example:8443")
        );
        assert_eq!(origin_of("http://a.example"), Some("http://a.example"));
        assert_eq!(origin_of("nonsense"), None);
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (new_token(), new_token());
        assert!(is_token(&a) && is_token(&b));
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same(&a, &a[..42]));
        assert!(!is_token("short"));
        assert_eq!(
            form_urlencoded_value(b"a=1&csrf=x%2By&csrf=z", "csrf").as_deref(),
            Some("x+y")
        );
        assert_eq!(form_urlencoded_value(b"a=1", "csrf"), None);
    }
}
