//! Fault injection in the requests a process serves, for chaos runs and the tests that
//! make one replica slow or failing: set from the `faults` section at start, and switched
//! while serving by an admin through `GET`/`PUT /admin/faults`.
//!
//! The faults apply to every request of the service's router except `/admin/faults`
//! itself and `/metrics`, health checks included (a replica that answers slowly is slow to its health
//! checks too). An aborted request is answered `502` with a problem document: a server
//! cannot fake a reset connection from inside its router.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    error_handling::HandleErrorLayer,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use tideway_resilience::{BoxError, FaultHandle, FaultInjectionLayer, Faults};
use tideway_runtime::{
    Problem,
    auth::{AuthError, JwtVerifier, bearer},
};

/// The `faults` section, and the body of `PUT /admin/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    /// `faults.latency_ms`: added to the answer of a share of requests (0: none).
    pub latency_ms: u64,
    /// `faults.latency_share`: the share of requests delayed (0 to 1).
    pub latency_share: f64,
    /// `faults.error_share`: the share of requests answered `error_status` unserved.
    pub error_share: f64,
    /// `faults.error_status`: a 4xx or 5xx status.
    pub error_status: u16,
    /// `faults.abort_share`: the share of requests aborted (answered 502).
    pub abort_share: f64,
}

impl Default for FaultsConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            latency_share: 1.0,
            error_share: 0.0,
            error_status: 503,
            abort_share: 0.0,
        }
    }
}

impl FaultsConfig {
    /// The layer's setting, or the key (`faults.…`) that is wrong and what it accepts.
    pub fn to_faults(&self) -> Result<Faults, (String, String)> {
        let share = |key: &str, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(value)
            } else {
                Err((
                    format!("faults.{key}"),
                    "a share between 0 and 1".to_owned(),
                ))
            }
        };
        let error_status = StatusCode::from_u16(self.error_status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .ok_or_else(|| {
                (
                    "faults.error_status".to_owned(),
                    "a 4xx or 5xx status".to_owned(),
                )
            })?;
        if self.latency_ms > 600_000 {
            return Err((
                "faults.latency_ms".to_owned(),
                "milliseconds up to 600000".to_owned(),
            ));
        }
        Ok(Faults {
            latency_share: share("latency_share", self.latency_share)?,
            latency: Duration::from_millis(self.latency_ms),
            error_share: share("error_share", self.error_share)?,
            error_status,
            abort_share: share("abort_share", self.abort_share)?,
        })
    }

    fn of(faults: &Faults) -> Self {
        Self {
            latency_ms: u64::try_from(faults.latency.as_millis()).unwrap_or(u64::MAX),
            latency_share: faults.latency_share,
            error_share: faults.error_share,
            error_status: faults.error_status.as_u16(),
            abort_share: faults.abort_share,
        }
    }
}

#[derive(Clone)]
struct Admin {
    handle: FaultHandle,
    verifier: Arc<JwtVerifier>,
}

/// `router` with the faults of `handle` injected, and `/admin/faults` (role admin) beside
/// it. `/metrics` is never faulted, so what a faulty process does stays observable.
pub fn wrap(router: Router, handle: FaultHandle, verifier: Arc<JwtVerifier>) -> Router {
    let faulty = tower::Layer::layer(
        &(
            HandleErrorLayer::new(aborted),
            FaultInjectionLayer::new(handle.clone()),
        ),
        router.clone(),
    );
    // One fallback service choosing by path, so the inner router's matched paths (and its
    // metrics' route labels) stay its own.
    let select = tower::service_fn(move |request: axum::extract::Request| {
        let faulty = faulty.clone();
        let plain = router.clone();
        async move {
            if request.uri().path() == "/metrics" {
                tower::ServiceExt::oneshot(plain, request).await
            } else {
                tower::ServiceExt::oneshot(faulty, request).await
            }
        }
    });
    Router::new()
        .route("/admin/faults", get(current).put(replace))
        .with_state(Admin { handle, verifier })
        .fallback_service(select)
}

async fn aborted(err: BoxError) -> Response {
    Problem::new(StatusCode::BAD_GATEWAY)
        .with_type("/problems/fault-injected")
        .with_detail(err.to_string())
        .into_response()
}

async fn check_admin(admin: &Admin, headers: &HeaderMap) -> Result<(), AuthError> {
    let claims = admin.verifier.verify(bearer(headers)?).await?;
    if claims.has_role("admin") {
        Ok(())
    } else {
        Err(AuthError::Forbidden("admin".to_owned()))
    }
}

async fn current(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Err(err) = check_admin(&admin, &headers).await {
        return err.into_response();
    }
    Json(FaultsConfig::of(&admin.handle.current())).into_response()
}

async fn replace(
    State(admin): State<Admin>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(err) = check_admin(&admin, &headers).await {
        return err.into_response();
    }
    let wanted: FaultsConfig = match serde_json::from_slice(&body) {
        Ok(wanted) => wanted,
        Err(err) => return invalid("body", &err.to_string()),
    };
    let faults = match wanted.to_faults() {
        Ok(faults) => faults,
        Err((key, expected)) => {
            let field = key.trim_start_matches("faults.").to_owned();
            return invalid(&field, &format!("expected {expected}"));
        }
    };
    if let Err(err) = admin.handle.set(faults) {
        return invalid(err.parameter, err.reason);
    }
    tracing::warn!(faults = ?admin.handle.current(), "Injected faults changed.");
    Json(FaultsConfig::of(&admin.handle.current())).into_response()
}

fn invalid(field: &str, reason: &str) -> Response {
    Problem::invalid_field(field, reason).into_response()
}
