//! The audit of admin actions made through the gateway: writes a route admits only for a
//! role, recorded with the resource before (a `GET` of the same path, when it answers
//! JSON) and the answer after; and configuration changes (see `live.rs`).

use std::time::Duration;

use axum::{
    body::{Body, HttpBody},
    extract::Request,
    http::{Method, StatusCode, header},
    response::Response,
};
use serde_json::Value;
use tideway_audit::{AuditStore, Entry, Recorder};
use tideway_runtime::client::Transport;

use crate::MIRROR_BODY_LIMIT;

/// Where the gateway records.
pub(crate) struct Audit {
    pub(crate) store: AuditStore,
    pub(crate) recorder: Recorder,
}

/// The resource a write is about to change: a `GET` of the same path with the same
/// credentials when it answers 2xx with JSON, or, when the path cannot be read (405), of
/// the path it belongs to (the item of `/items/{id}/price`). A creation (`POST`) has none.
pub(crate) async fn before(
    upstream: &Transport,
    method: &Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    timeout: Duration,
) -> Option<Value> {
    if !matches!(*method, Method::PUT | Method::PATCH | Method::DELETE) {
        return None;
    }
    let path = uri.path().to_owned();
    match read(upstream, uri, &headers, timeout).await {
        Err(StatusCode::METHOD_NOT_ALLOWED) => {
            let (parent, _) = path.trim_end_matches('/').rsplit_once('/')?;
            let parent: axum::http::Uri = parent.parse().ok()?;
            read(upstream, parent, &headers, timeout)
                .await
                .ok()
                .flatten()
        }
        answer => answer.ok().flatten(),
    }
}

async fn read(
    upstream: &Transport,
    uri: axum::http::Uri,
    headers: &axum::http::HeaderMap,
    timeout: Duration,
) -> Result<Option<Value>, StatusCode> {
    let mut read = Request::new(Body::empty());
    *read.uri_mut() = uri;
    for name in [header::AUTHORIZATION, header::ACCEPT] {
        if let Some(value) = headers.get(&name) {
            read.headers_mut().insert(name, value.clone());
        }
    }
    let Ok(answer) = upstream.send_with_timeout(read, timeout).await else {
        return Ok(None);
    };
    if !answer.status().is_success() {
        return Err(answer.status());
    }
    let Ok(bytes) = axum::body::to_bytes(answer.into_body(), MIRROR_BODY_LIMIT).await else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Records a write that succeeded, with its answer as the state after, and hands the
/// answer back. A failed write changed nothing and is not recorded.
pub(crate) async fn after(
    audit: &Audit,
    actor: String,
    service: &str,
    method: &Method,
    path: String,
    before: Option<Value>,
    response: Response,
) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let fits = response
        .body()
        .size_hint()
        .upper()
        .is_some_and(|upper| upper <= MIRROR_BODY_LIMIT as u64);
    let (response, after) = if fits {
        let (parts, body) = response.into_parts();
        match axum::body::to_bytes(body, MIRROR_BODY_LIMIT).await {
            Ok(bytes) => {
                let after = serde_json::from_slice(&bytes).ok();
                (Response::from_parts(parts, Body::from(bytes)), after)
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read an admin write's answer");
                (Response::from_parts(parts, Body::empty()), None)
            }
        }
    } else {
        (response, None)
    };
    let entry = Entry {
        actor,
        action: format!("{service}.{}", method.as_str().to_ascii_lowercase()),
        target: path,
        before,
        after,
        trace_id: tideway_audit::current_trace_id(),
    };
    // Appended before the answer leaves, so whoever made the change can read its record.
    if let Err(err) = audit.store.append(&entry).await {
        tracing::error!(error = %err, action = entry.action, target = entry.target, "an admin action was not recorded in the audit trail");
    }
    response
}
