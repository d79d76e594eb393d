//! The resilient stack around a balancer, as one boxed service a [`Transport`] holds:
//!
//! ```text
//! buffer the body → HttpDeadline → Retry (budget) → Bulkhead → pick a replica → CircuitBreaker (per replica) → its pool
//! ```
//!
//! The deadline bounds the whole call, retries and answer body included; a retry picks a
//! replica afresh, so it usually lands elsewhere; the bulkhead caps calls in flight to the
//! service; each replica's breaker counts that replica's outcomes only.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tideway_client::{Body, ClientError, Transport};
use tideway_resilience::{
    BreakerOpen, BulkheadFull, BulkheadLayer, DeadlineExceeded, FaultAborted, HttpDeadlineLayer,
    RetryLayer,
};
use tower::{BoxError, Layer, ServiceExt, service_fn, util::BoxCloneSyncService};

use crate::{
    BuildError,
    balancer::{Balancer, NoInstances},
    config::BalanceConfig,
};

/// The stack below the body buffering, type-erased.
type Inner = BoxCloneSyncService<
    Request<Full<Bytes>>,
    Response<tideway_resilience::DeadlineBody<crate::balancer::Incoming>>,
    BoxError,
>;

/// Builds the transport to `balancer`'s service: every call under `deadline`, retried and
/// guarded as `config` says.
pub(crate) fn transport(
    balancer: &Balancer,
    config: &BalanceConfig,
    deadline: Duration,
) -> Result<Transport, BuildError> {
    let service: Arc<str> = balancer.service().into();
    let pick = {
        let balancer = balancer.clone();
        service_fn(move |request: Request<Full<Bytes>>| {
            let balancer = balancer.clone();
            async move {
                let Some(endpoint) = balancer.pick() else {
                    return Err::<_, BoxError>(
                        NoInstances {
                            service: balancer.service().to_owned(),
                        }
                        .into(),
                    );
                };
                balancer.call(&endpoint, request).await
            }
        })
    };
    let bulkhead = BulkheadLayer::new(
        service.to_string(),
        config.bulkhead.max_concurrent,
        config.bulkhead.max_queued,
        Duration::from_millis(config.bulkhead.queue_timeout_ms),
    )?;
    let retry = RetryLayer::new(&service, config.retry.settings())?;
    let deadline_layer = HttpDeadlineLayer::new(deadline)?;
    // Boxed before it is used in an async block (see `Endpoint::send`).
    let stack: Inner =
        BoxCloneSyncService::new(deadline_layer.layer(retry.layer(bulkhead.layer(pick))));
    let limit = config.max_request_body_bytes;
    let name = Arc::clone(&service);
    let outer = service_fn(move |request: Request<Body>| {
        let stack = stack.clone();
        let service = Arc::clone(&name);
        async move {
            let (parts, body) = request.into_parts();
            let bytes = http_body_util::Limited::new(body, limit)
                .collect()
                .await
                .map_err(|err| {
                    ClientError::InvalidRequest(format!(
                        "request body: {err} (at most {limit} bytes)"
                    ))
                })?
                .to_bytes();
            let request = Request::from_parts(parts, Full::new(bytes));
            match stack.oneshot(request).await {
                Ok(response) => Ok(response.map(Body::new)),
                Err(err) => Err(classify(&service, deadline, err)),
            }
        }
    });
    let boxed: BoxCloneSyncService<Request<Body>, Response<Body>, ClientError> =
        BoxCloneSyncService::new(outer);
    Ok(Transport::from_service(
        &service,
        format!("balanced over {service}'s replicas"),
        boxed,
        deadline,
    ))
}

/// The one table from the stack's errors to a [`ClientError`].
pub(crate) fn classify(service: &str, deadline: Duration, err: BoxError) -> ClientError {
    if err.is::<DeadlineExceeded>() {
        return ClientError::Timeout {
            service: service.to_owned(),
            timeout: deadline,
        };
    }
    if err.is::<BreakerOpen>() || err.is::<BulkheadFull>() || err.is::<NoInstances>() {
        return ClientError::Unavailable {
            service: service.to_owned(),
            reason: err.to_string(),
        };
    }
    if err.is::<FaultAborted>() {
        return ClientError::Connect {
            service: service.to_owned(),
            message: err.to_string(),
        };
    }
    ClientError::Connect {
        service: service.to_owned(),
        message: tideway_client::error_chain(err.as_ref()),
    }
}
