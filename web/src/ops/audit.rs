//! `/ops/audit`: the audit trail of admin actions, newest first, a page at a time, from
//! `GET /api/v1/admin/audit`: when, who, what, on what, the trace, and the state before and
//! after.

use axum::extract::{Query, State};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::admin;
use crate::{
    AppState,
    error::PageError,
    layout::{Section, page},
    session::Visitor,
};

/// Records per page.
const PAGE_SIZE: u64 = 25;

/// The page asked for.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    page: Option<String>,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn state_of(value: &Value) -> Markup {
    match value {
        Value::Null => html! { span.empty { "—" } },
        other => html! {
            pre { (serde_json::to_string_pretty(other).unwrap_or_default()) }
        },
    }
}

/// `GET /ops/audit`.
pub(crate) async fn list(
    State(state): State<AppState>,
    visitor: Visitor,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Markup, PageError> {
    let user = admin(&visitor, "/ops/audit")?;
    // A hand-edited page that is not a number shows the first.
    let current = query
        .ok()
        .and_then(|Query(q)| q.page)
        .and_then(|page| page.parse::<u64>().ok())
        .filter(|page| (1..=1_000_000).contains(page))
        .unwrap_or(1);
    let trail: Result<Value, _> = state
        .api
        .get(
            &user.token,
            &format!("/api/v1/admin/audit?page={current}&page_size={PAGE_SIZE}"),
        )
        .await;
    let body = html! {
        h1 { "Audit trail" }
        p.hint { "Every admin action made through the gateway, chained by hash: "
            code { "tideway audit verify" } " finds a record changed or removed." }
        @match trail {
            Err(err) => p.alert role="alert" { "The audit trail did not answer: " (err) }
            Ok(trail) => {
                @let records = trail["records"].as_array().cloned().unwrap_or_default();
                @let total = trail["total"].as_u64().unwrap_or(0);
                @let pages = total.div_ceil(PAGE_SIZE).max(1);
                p.summary { (total) " records · page " (current) " of " (pages) }
                @if records.is_empty() {
                    p.empty { "No admin action is recorded yet." }
                } @else {
                    table.audit {
                        thead { tr {
                            th scope="col" class="num" { "#" } th scope="col" { "When" }
                            th scope="col" { "Who" } th scope="col" { "Action" }
                            th scope="col" { "On" } th scope="col" { "Trace" }
                            th scope="col" { "Before → after" }
                        } }
                        tbody {
                            @for record in &records {
                                tr data-audit=(text(&record["seq"])) {
                                    td.num { (text(&record["seq"])) }
                                    td { (text(&record["at"])) }
                                    td { code { (text(&record["actor"])) } }
                                    td { code { (text(&record["action"])) } }
                                    td { code { (text(&record["target"])) } }
                                    td {
                                        @let trace = text(&record["trace_id"]);
                                        @if !trace.is_empty() {
                                            a href=(format!("/ops/traces/{}", crate::api::segment(&trace))) { code { (trace.chars().take(8).collect::<String>()) } }
                                        }
                                    }
                                    td {
                                        details {
                                            summary { "States" }
                                            div.audit-states {
                                                div { h3 { "Before" } (state_of(&record["before"])) }
                                                div { h3 { "After" } (state_of(&record["after"])) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if pages > 1 {
                    nav.pagination aria-label="Pagination" {
                        @if current > 1 {
                            a href=(format!("/ops/audit?page={}", current - 1)) rel="prev" { "← Newer" }
                        }
                        span { "Page " (current) " of " (pages) }
                        @if current < pages {
                            a href=(format!("/ops/audit?page={}", current + 1)) rel="next" { "Older →" }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Audit trail", &visitor, Section::Ops, body))
}
