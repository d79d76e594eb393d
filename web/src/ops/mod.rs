//! The operations console at `/ops`, for admins: every service with its address and
//! health, the gateway's routes, live traffic per service (request and error rates, p50
//! and p99 latency, from the services' own `/metrics`), the recent events on the bus, the
//! checkout sagas with their steps, and from an order to its trace; charts of the last 15
//! minutes (traffic, saga outcomes, outbox lag) from a background sampler. The panels
//! refresh themselves with htmx.

mod audit;
mod charts;
mod dead_letters;
pub mod events;
pub mod metrics;
mod reporting;
mod sampler;
mod traces;

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Path, Query, State},
    http::Request,
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use futures_util::future::join_all;
use maud::{Markup, html};
use serde::Deserialize;
use tideway_ordering_api::{OrderView, SagaPage};
use tideway_runtime::client::Transport;

use crate::{
    AppState,
    error::PageError,
    layout::{Section, badge, page, when},
    session::{User, Visitor},
    shop::{short, timeline},
};

pub use events::{EventSummary, EventTap};
pub use metrics::{ServiceTraffic, Traffic};
pub use sampler::{DEFAULT_EVERY as DEFAULT_SAMPLE_EVERY, EVERY_RANGE as SAMPLE_EVERY_RANGE};

/// A gateway route as the console shows it.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// The path prefix.
    pub prefix: String,
    /// The upstream service.
    pub upstream: String,
    /// Who may read.
    pub read: String,
    /// Who may write.
    pub write: String,
}

/// What the console watches.
pub struct OpsSources {
    /// Every service (and the gateway), reached directly for `/health/ready` and `/metrics`.
    pub services: Vec<Transport>,
    /// The gateway's routes.
    pub routes: Vec<RouteInfo>,
    /// How often the charts' sampler reads every service's `/metrics` (clamped to
    /// [`SAMPLE_EVERY_RANGE`]); the charts keep 15 minutes of readings.
    pub sample_every: Duration,
}

/// The console's state: its sources, the traffic window, the charts' sampler, the event tap.
pub(crate) struct Console {
    sources: OpsSources,
    traffic: Mutex<Traffic>,
    sampler: sampler::Sampler,
    events: EventTap,
    dead_letters: Mutex<Option<std::sync::Arc<dyn tideway_bus::DeadLetters>>>,
}

/// How many recent events the console keeps.
const EVENTS_KEPT: usize = 200;

impl Console {
    pub(crate) fn new(sources: OpsSources) -> Self {
        Self {
            sampler: sampler::Sampler::new(sources.services.clone(), sources.sample_every),
            sources,
            traffic: Mutex::new(Traffic::default()),
            events: EventTap::new(EVENTS_KEPT),
            dead_letters: Mutex::new(None),
        }
    }

    pub(crate) fn events(&self) -> &EventTap {
        &self.events
    }

    /// Starts the charts' background sampler (once).
    pub(crate) fn start_sampling(&self) {
        self.sampler.start();
    }

    /// Stops the charts' sampler and waits for its task to end.
    pub(crate) async fn shutdown(&self) {
        self.sampler.shutdown().await;
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ops", get(console))
        .route("/ops/services", get(services_panel))
        .route("/ops/traffic", get(traffic_panel))
        .route("/ops/charts", get(charts_panel))
        .route("/ops/events", get(events_panel))
        .route("/ops/sagas", get(sagas_panel))
        .route("/ops/notifications", get(notifications_panel))
        .route("/ops/dead-letters", get(dead_letters::list))
        .route("/ops/audit", get(audit::list))
        .route(
            "/ops/dead-letters/redrive",
            axum::routing::post(dead_letters::redrive),
        )
        .route("/ops/reporting", get(reporting::page_of_reports))
        .route("/ops/edge", get(edge_panel))
        .route("/ops/order", get(find_order))
        .route("/ops/orders/{id}", get(order))
        .route("/ops/traces/{trace_id}", get(traces::trace))
}

fn admin(visitor: &Visitor, here: &str) -> Result<User, PageError> {
    match &visitor.user {
        None => Err(PageError::SignIn {
            next: here.to_owned(),
        }),
        Some(user) if !user.is_admin() => Err(PageError::Forbidden),
        Some(user) => Ok(user.clone()),
    }
}

/// `GET /ops`.
async fn console(State(state): State<AppState>, visitor: Visitor) -> Result<Markup, PageError> {
    let user = admin(&visitor, "/ops")?;
    let (services, traffic, sagas, notifications, edge) = tokio::join!(
        services(&state, &user),
        traffic(&state),
        sagas(&state, &user),
        notifications(&state, &user),
        edge(&state, &user),
    );
    let body = html! {
        div.ops-head {
            h1 { "Operations" }
            form.find role="search" action="/ops/order" method="get" {
                label for="order-id" { "Find an order" }
                input #order-id name="id" type="search" placeholder="Order id" required;
                button type="submit" { "Show" }
            }
            a href="/ops/dead-letters" { "Dead letters" }
            a href="/ops/audit" { "Audit trail" }
            a href="/ops/reporting" { "Reports" }
        }
        div.ops-grid {
            (services)
            (traffic)
        }
        (charts_section(&state))
        (routes_panel(&state))
        (edge)
        (sagas)
        (notifications)
        (events_section(&state.ops.events.recent(), None))
    };
    Ok(page("Operations", &visitor, Section::Ops, body))
}

async fn services_panel(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Markup, PageError> {
    let user = admin(&visitor, "/ops")?;
    Ok(services(&state, &user).await)
}

async fn traffic_panel(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Markup, PageError> {
    admin(&visitor, "/ops")?;
    Ok(traffic(&state).await)
}

async fn charts_panel(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Markup, PageError> {
    admin(&visitor, "/ops")?;
    Ok(charts_section(&state))
}

/// The charts of the last 15 minutes, from what the background sampler has read; refreshed
/// once per reading.
fn charts_section(state: &AppState) -> Markup {
    let sampler = &state.ops.sampler;
    let every = sampler.every();
    let refresh = format!("every {}ms", every.as_millis());
    let charts = sampler.with_history(|history| charts::render(history, Instant::now()));
    html! {
        section.panel #panel-charts aria-labelledby="charts-heading"
            hx-get="/ops/charts" hx-trigger=(refresh) hx-swap="outerHTML" {
            h2 #charts-heading { "The last 15 minutes" }
            @if !sampler.is_started() {
                p.alert role="alert" { "This console samples nothing: its sampler was not started." }
            }
            (charts)
            p.hint {
                "One reading of every service's /metrics every " (format_every(every))
                ", taken in the background since the process started; a gap is a reading that did not answer."
            }
        }
    }
}

/// `10 s`, `500 ms`.
fn format_every(every: Duration) -> String {
    if every.subsec_millis() == 0 {
        format!("{} s", every.as_secs())
    } else {
        format!("{} ms", every.as_millis())
    }
}

async fn events_panel(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Markup, PageError> {
    admin(&visitor, "/ops")?;
    Ok(events_section(&state.ops.events.recent(), None))
}

async fn notifications_panel(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Markup, PageError> {
    let user = admin(&visitor, "/ops")?;
    Ok(notifications(&state, &user).await)
}

/// The latest emails to every customer (`GET /api/v1/notification/recent`), with their state.
async fn notifications(state: &AppState, user: &User) -> Markup {
    let page: Result<tideway_notification_api::NotificationPage, _> = state
        .api
        .get(
            &user.token,
            &format!("{}?limit=10", tideway_notification_api::RECENT_PATH),
        )
        .await;
    html! {
        section.panel #panel-notifications aria-labelledby="notifications-heading"
            hx-get="/ops/notifications" hx-trigger="every 3s" hx-swap="outerHTML" {
            h2 #notifications-heading { "Latest notifications" }
            @match page {
                Err(err) => p.alert role="alert" { "The notification service did not answer: " (err) }
                Ok(page) if page.items.is_empty() => p.empty { "No notifications yet." }
                Ok(page) => {
                    table.notifications {
                        thead { tr {
                            th scope="col" { "Order" } th scope="col" { "To" } th scope="col" { "Subject" }
                            th scope="col" { "State" } th scope="col" { "Attempts" } th scope="col" { "Created" }
                        } }
                        tbody {
                            @for note in &page.items {
                                tr data-notification=(note.id) {
                                    td { a href=(format!("/ops/orders/{}", crate::api::segment(&note.order_id))) { (short(&note.order_id)) } }
                                    td { (note.to) }
                                    td { (note.subject) }
                                    td {
                                        (badge(note.status.as_str()))
                                        @if let Some(error) = &note.last_error { " " small { (error) } }
                                    }
                                    td.num { (note.attempts) }
                                    td { (when(&note.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn sagas_panel(State(state): State<AppState>, visitor: Visitor) -> Result<Markup, PageError> {
    let user = admin(&visitor, "/ops")?;
    Ok(sagas(&state, &user).await)
}

/// One service's health as read from `/health/ready`.
struct Health {
    service: String,
    address: String,
    ready: bool,
    detail: String,
}

async fn health(transport: &Transport) -> Health {
    let request = Request::get("/health/ready").body(Body::empty());
    let (ready, detail) = match request {
        Err(err) => (false, err.to_string()),
        Ok(request) => match transport.send(request).await {
            Err(err) => (false, err.to_string()),
            Ok(response) => {
                let ok = response.status().is_success();
                let text = read_text(response).await.unwrap_or_default();
                let detail = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|body| {
                        let failing: Vec<String> = body["checks"]
                            .as_array()?
                            .iter()
                            .filter(|c| c["ok"] != serde_json::Value::Bool(true))
                            .map(|c| {
                                format!(
                                    "{}: {}",
                                    c["name"].as_str().unwrap_or("check"),
                                    c["error"].as_str().unwrap_or("failing")
                                )
                            })
                            .collect();
                        Some(failing.join("; "))
                    })
                    .unwrap_or_default();
                (ok, detail)
            }
        },
    };
    Health {
        service: transport.service().to_owned(),
        address: transport.address(),
        ready,
        detail,
    }
}

/// The gateway's view of every replica (`GET /api/v1/admin/instances`), when it balances
/// over discovered replicas; the embedded shape has none.
#[derive(Debug, serde::Deserialize)]
struct Replicas {
    services: Vec<ServiceReplicas>,
}

#[derive(Debug, serde::Deserialize)]
struct ServiceReplicas {
    service: String,
    instances: Vec<Replica>,
}

#[derive(Debug, serde::Deserialize)]
struct Replica {
    id: String,
    address: String,
    version: Option<String>,
    ready: bool,
    ejected: bool,
    breaker: String,
    requests_per_sec: f64,
    ewma_latency_ms: f64,
}

async fn services(state: &AppState, user: &User) -> Markup {
    let (checks, replicas) = tokio::join!(
        join_all(state.ops.sources.services.iter().map(health)),
        state
            .api
            .get::<Replicas>(&user.token, "/api/v1/admin/instances")
    );
    let replicas = replicas.ok();
    html! {
        section.panel #panel-services aria-labelledby="services-heading"
            hx-get="/ops/services" hx-trigger="every 5s" hx-swap="outerHTML" {
            h2 #services-heading { "Services" }
            table {
                thead { tr { th scope="col" { "Service" } th scope="col" { "Address" } th scope="col" { "Health" } } }
                tbody {
                    @for check in &checks {
                        tr {
                            th scope="row" { (check.service) }
                            td { code { (check.address) } }
                            td {
                                (badge(if check.ready { "ready" } else { "not_ready" }))
                                @if !check.detail.is_empty() { " " small { (check.detail) } }
                                @if !check.ready {
                                    @if let Some(lost) = takes_down(&check.service) {
                                        " " small.degrades { "Down: " (lost) "." }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(replicas) = &replicas {
                h3 { "Replicas" }
                table #replicas {
                    thead { tr {
                        th scope="col" { "Service" }
                        th scope="col" { "Replica" }
                        th scope="col" { "Address" }
                        th scope="col" { "Version" }
                        th scope="col" { "State" }
                        th.num scope="col" { "Requests/s" }
                        th.num scope="col" { "EWMA" }
                    } }
                    tbody {
                        @for service in &replicas.services {
                            @for replica in &service.instances {
                                tr data-replica=(replica.id) {
                                    td { (service.service) }
                                    th scope="row" { (replica.id) }
                                    td { code { (replica.address) } }
                                    td { (replica.version.as_deref().unwrap_or("–")) }
                                    td {
                                        (replica_badge(replica))
                                        @if replica.breaker != "closed" {
                                            " " small { "breaker " (replica.breaker) }
                                        }
                                    }
                                    td.num { (format!("{:.1}", replica.requests_per_sec)) }
                                    td.num { (format!("{:.1} ms", replica.ewma_latency_ms)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the shop loses while `service` is down, as each one degrades (README, "When a
/// dependency is down"); `None` for a name the shop does not know.
fn takes_down(service: &str) -> Option<&'static str> {
    Some(match service {
        "gateway" => "the shop and the API",
        "identity" => "sign-in and registration",
        "catalog" => "browsing; the basket shows last known prices and checkout waits",
        "basket" => "the basket and checkout",
        "inventory" => "checkout is refused before any order is placed",
        "payment" => "checkout is refused (no card can be vaulted)",
        "ordering" => "checkout and orders",
        "notification" => "order emails wait on the bus",
        "reporting" => "reports wait on the bus",
        _ => return None,
    })
}

/// A replica's state, marked apart from the services' health badges.
fn replica_badge(replica: &Replica) -> Markup {
    let (state, label) = if replica.ejected {
        ("ejected", "Ejected")
    } else if replica.ready {
        ("ready", "Ready")
    } else {
        ("not_ready", "Not ready")
    };
    html! { span.badge data-replica-status=(state) { (label) } }
}

/// One process's `/metrics` text; `None` when it does not answer with one.
async fn scrape(transport: &Transport) -> Option<String> {
    let request = Request::get("/metrics").body(Body::empty()).ok()?;
    let response = transport.send(request).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    read_text(response).await
}

async fn traffic(state: &AppState) -> Markup {
    let texts = join_all(state.ops.sources.services.iter().map(scrape)).await;
    let mut snapshot = metrics::Snapshot::default();
    for text in texts.into_iter().flatten() {
        snapshot.merge(metrics::parse(&text));
    }
    let rows = match state.ops.traffic.lock() {
        Ok(mut window) => window.observe(snapshot, Instant::now()),
        Err(poisoned) => poisoned.into_inner().observe(snapshot, Instant::now()),
    };
    // Seconds past one, so a slow service does not widen its column.
    let ms = |v: Option<f64>| match v {
        None => "–".to_owned(),
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) => format!("{v:.1} ms"),
    };
    html! {
        section.panel #panel-traffic aria-labelledby="traffic-heading"
            hx-get="/ops/traffic" hx-trigger="every 2s" hx-swap="outerHTML" {
            h2 #traffic-heading { "Traffic" }
            // Short headings, so the seven columns fit the panel beside the services.
            div.table-scroll { table.traffic {
                thead { tr {
                    th scope="col" { "Service" }
                    th.num scope="col" { abbr title="Requests per second" { "Req/s" } }
                    th.num scope="col" { abbr title="Errors (4xx and 5xx) per second" { "Err/s" } }
                    th.num scope="col" { abbr title="Error rate" { "Err %" } }
                    th.num scope="col" { "p50" }
                    th.num scope="col" { "p99" }
                    th.num scope="col" { abbr title="Requests since the process started" { "Total" } }
                } }
                tbody {
                    @for row in &rows {
                        tr {
                            th scope="row" { (row.service) }
                            td.num data-label="Requests/s" { (format!("{:.1}", row.requests_per_s)) }
                            td.num data-label="Errors/s" { (format!("{:.2}", row.errors_per_s)) }
                            td.num data-label="Error rate" { (format!("{:.1} %", row.error_ratio * 100.0)) }
                            td.num data-label="p50" { (ms(row.p50_ms)) }
                            td.num data-label="p99" { (ms(row.p99_ms)) }
                            td.num data-label="Total" { (row.requests_total) }
                        }
                    }
                }
            } }
            p.hint { "Rates over the last seconds, from each service's /metrics; their history is charted below." }
        }
    }
}

fn routes_panel(state: &AppState) -> Markup {
    html! {
        section.panel aria-labelledby="routes-heading" {
            h2 #routes-heading { "Gateway routes" }
            table {
                thead { tr {
                    th scope="col" { "Prefix" } th scope="col" { "Upstream" }
                    th scope="col" { "Read" } th scope="col" { "Write" }
                } }
                tbody {
                    @for route in &state.ops.sources.routes {
                        tr {
                            td { code { (route.prefix) } }
                            td { (route.upstream) }
                            td { (route.read) }
                            td { (route.write) }
                        }
                    }
                }
            }
        }
    }
}

fn events_section(events: &[EventSummary], trace: Option<&str>) -> Markup {
    let refresh = trace.is_none();
    html! {
        section.panel #panel-events aria-labelledby="events-heading"
            hx-get=[refresh.then_some("/ops/events")] hx-trigger=[refresh.then_some("every 3s")]
            hx-swap=[refresh.then_some("outerHTML")] {
            h2 #events-heading { @if trace.is_some() { "Events of this trace" } @else { "Recent events" } }
            @if events.is_empty() {
                p.empty { "No events yet. Place an order and watch them arrive." }
            } @else {
                table.events {
                    thead { tr {
                        th scope="col" { "Time" } th scope="col" { "Type" }
                        th scope="col" { "Source" } th scope="col" { "Subject" } th scope="col" { "Trace id" }
                    } }
                    tbody {
                        @for event in events.iter().take(50) {
                            tr {
                                td { (when(&event.time)) }
                                td { code { (event.event_type) } }
                                td { (event.source) }
                                td { @if let Some(subject) = &event.subject { code { (short(subject)) } } }
                                td { @if let Some(trace) = &event.trace_id { code.trace { (trace) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn sagas(state: &AppState, user: &User) -> Markup {
    let page: Result<SagaPage, _> = state
        .api
        .get(&user.token, "/api/v1/ordering/sagas?limit=20")
        .await;
    html! {
        section.panel #panel-sagas aria-labelledby="sagas-heading"
            hx-get="/ops/sagas" hx-trigger="every 3s" hx-swap="outerHTML" {
            h2 #sagas-heading { "Checkout sagas" }
            @match page {
                Err(err) => p.alert role="alert" { "The ordering service did not answer: " (err) }
                Ok(page) if page.items.is_empty() => p.empty { "No checkouts yet." }
                Ok(page) => {
                    table.sagas {
                        thead { tr {
                            th scope="col" { "Order" } th scope="col" { "Saga" } th scope="col" { "State" }
                            th scope="col" { "Steps" } th scope="col" { "Trace id" } th scope="col" { "Updated" }
                        } }
                        tbody {
                            @for saga in &page.items {
                                tr data-order=(saga.id) {
                                    td { a href=(format!("/ops/orders/{}", crate::api::segment(&saga.id))) { (short(&saga.id)) } }
                                    td { (saga.saga) }
                                    td {
                                        (badge(&saga.status))
                                        @if let Some(reason) = &saga.reason { " " small { (reason) } }
                                    }
                                    td {
                                        ol.steps {
                                            @for step in &saga.steps {
                                                li data-status=(step.status) title=(step.detail.clone().unwrap_or_default()) {
                                                    (step.step.replace('_', " "))
                                                    @if step.kind != "action" { " (" (step.kind) ")" }
                                                }
                                            }
                                        }
                                    }
                                    td { @if let Some(trace) = &saga.trace_id { code.trace { (trace) } } }
                                    td { (when(&saga.updated_at)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn edge_panel(State(state): State<AppState>, visitor: Visitor) -> Result<Markup, PageError> {
    let user = admin(&visitor, "/ops")?;
    Ok(edge(&state, &user).await)
}

/// The gateway's versions, weights, mirror differences and changes, from
/// `GET /api/v1/admin/traffic`.
async fn edge(state: &AppState, user: &User) -> Markup {
    let report: Result<serde_json::Value, _> =
        state.api.get(&user.token, "/api/v1/admin/traffic").await;
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let list = |value: &serde_json::Value| value.as_array().cloned().unwrap_or_default();
    html! {
        section.panel #panel-edge aria-labelledby="edge-heading"
            hx-get="/ops/edge" hx-trigger="every 3s" hx-swap="outerHTML" {
            h2 #edge-heading { "Versions and mirrors" }
            @match report {
                Err(err) => p.alert role="alert" { "The gateway did not answer: " (err) }
                Ok(report) => {
                    p { "Configuration version " strong { (text(&report["version"])) } }
                    @if list(&report["routes"]).is_empty() {
                        p.empty { "No route splits or mirrors traffic." }
                    } @else {
                        table.edge-versions {
                            thead { tr {
                                th scope="col" { "Route" } th scope="col" { "Version" } th scope="col" { "Weight" }
                                th scope="col" { "Requests" } th scope="col" { "Errors" } th scope="col" { "p99 ms" }
                            } }
                            tbody {
                                @for route in list(&report["routes"]) {
                                    @for (name, weight) in route["versions"].as_object().cloned().unwrap_or_default() {
                                        @let figures = &route["figures"][&name];
                                        tr data-route=(text(&route["prefix"])) data-version=(name) {
                                            td data-label="Route" { code { (text(&route["prefix"])) } }
                                            td data-label="Version" { (name) }
                                            td data-label="Weight" { (text(&weight)) }
                                            td data-label="Requests" { (text(&figures["requests"])) }
                                            td data-label="Errors" { (text(&figures["errors"])) }
                                            td data-label="p99 ms" { (format!("{:.1}", figures["p99_ms"].as_f64().unwrap_or(0.0))) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if let Some(mirror) = report["mirror"].as_object().filter(|m| !m.is_empty()) {
                        h3 { "Mirrored traffic" }
                        table.edge-mirror {
                            thead { tr {
                                th scope="col" { "Route" } th scope="col" { "Mirrored" } th scope="col" { "Same" }
                                th scope="col" { "Different" } th scope="col" { "Failed" } th scope="col" { "Dropped" }
                            } }
                            tbody {
                                @for (route, counts) in mirror {
                                    tr data-mirror=(route) {
                                        td data-label="Route" { code { (route) } }
                                        td data-label="Mirrored" { (text(&counts["mirrored"])) }
                                        td data-label="Same" { (text(&counts["same"])) }
                                        td data-label="Different" { (text(&counts["different"])) }
                                        td data-label="Failed" { (text(&counts["failed"])) }
                                        td data-label="Dropped" { (text(&counts["dropped"])) }
                                    }
                                }
                            }
                        }
                    }
                    @if !list(&report["differences"]).is_empty() {
                        h3 { "Latest differences" }
                        ul.edge-diffs {
                            @for diff in list(&report["differences"]).iter().rev().take(10) {
                                li {
                                    code { (text(&diff["request"])) } " → " (text(&diff["shadow"]))
                                    ": " (text(&diff["at_field"])) " (" (text(&diff["primary_status"]))
                                    " vs " (text(&diff["shadow_status"])) ")"
                                }
                            }
                        }
                    }
                    @if !list(&report["events"]).is_empty() {
                        h3 { "Changes" }
                        ul.edge-events {
                            @for event in list(&report["events"]).iter().rev().take(10) {
                                li data-kind=(text(&event["kind"])) {
                                    (badge(&text(&event["kind"]))) " v" (text(&event["version"])) " by "
                                    (text(&event["by"])) ": " (text(&event["detail"]))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The "find an order" form.
#[derive(Debug, Deserialize)]
struct FindOrder {
    #[serde(default)]
    id: String,
}

async fn find_order(
    visitor: Visitor,
    Query(find): Query<FindOrder>,
) -> Result<Response, PageError> {
    admin(&visitor, "/ops")?;
    let id = find.id.trim();
    if id.is_empty() {
        return Ok(Redirect::to("/ops").into_response());
    }
    Ok(Redirect::to(&format!("/ops/orders/{}", crate::api::segment(id))).into_response())
}

/// `GET /ops/orders/{id}`: an order, its saga and trace id, and the events of its trace.
async fn order(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let here = format!("/ops/orders/{}", crate::api::segment(&id));
    let user = admin(&visitor, &here)?;
    let order: OrderView = state
        .api
        .order(&user.token, &id)
        .await
        .map_err(|err| PageError::from_client(err, &here))?;
    let events = state.ops.events.for_trace(&order.trace_id);
    let status = crate::shop::status_name(order.status);
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/ops" { "Operations" } " / order " (short(&order.id)) }
        h1 { "Order " (short(&order.id)) }
        dl.facts {
            dt { "Order id" } dd { code { (order.id) } }
            dt { "Status" } dd #order-status { (badge(status)) @if let Some(reason) = &order.reason { " " (reason) } }
            dt { "Trace id" } dd { code.trace #trace-id { (order.trace_id) } }
            dt { "Customer" } dd { code { (order.user_id) } }
            dt { "Placed" } dd { (when(&order.created_at)) }
        }
        p.hint { "Search the services' logs for this trace id to follow the checkout across processes." }
        (traces::section(&order.trace_id))
        section.panel aria-labelledby="saga-heading" {
            h2 #saga-heading { "Saga steps" }
            (timeline(&order.timeline))
        }
        (events_section(&events, Some(&order.trace_id)))
    };
    Ok(page(
        &format!("Order {} · Operations", short(&order.id)),
        &visitor,
        Section::Ops,
        body,
    ))
}

/// A response's body as text, at most 4 MiB.
async fn read_text(response: axum::http::Response<Body>) -> Option<String> {
    let bytes = axum::body::to_bytes(response.into_body(), 4 * 1024 * 1024)
        .await
        .ok()?;
    String::from_utf8(bytes.to_vec()).ok()
}
