//! Traces without a collector: the spans this process kept in memory
//! (`telemetry.recent_spans`) drawn as a waterfall, server-rendered SVG (the CSP allows no
//! inline script or style, and none is needed). In the embedded shape every service's spans
//! are here; in the distributed shape only the gateway process's own.

use std::collections::HashMap;

use axum::extract::{Path, State};
use maud::{Markup, html};
use tideway_runtime::telemetry::{self, SpanRecord};

use crate::{
    AppState,
    error::PageError,
    layout::{Section, page},
    session::Visitor,
};

/// Pixels of one waterfall row.
const ROW: u32 = 22;
/// The width of the label column and of the bars, in SVG units.
const LABEL: u32 = 330;
const BARS: u32 = 620;

/// The spans of `trace_id` kept by this process, if spans are kept at all.
pub(crate) fn spans_of(trace_id: &str) -> Option<Vec<SpanRecord>> {
    telemetry::recent().map(|store| store.trace(trace_id))
}

/// Depth of each span below the trace's roots (a span whose parent is missing is a root).
fn depths(spans: &[SpanRecord]) -> Vec<usize> {
    let index: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    spans
        .iter()
        .map(|span| {
            let mut depth = 0;
            let mut parent = span.parent_span_id.as_str();
            while let Some(&i) = index.get(parent) {
                depth += 1;
                parent = spans[i].parent_span_id.as_str();
                if depth > spans.len() {
                    break;
                }
            }
            depth
        })
        .collect()
}

/// The millisecond figure of `us` microseconds, as shown.
fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// The waterfall of `spans` (sorted by start): one row per span, indented by depth, with
/// its service, name, start offset and duration; failed spans in the error colour.
pub(crate) fn waterfall(spans: &[SpanRecord]) -> Markup {
    if spans.is_empty() {
        return html! { p.hint { "No span of this trace is kept in this process." } };
    }
    let t0 = spans.iter().map(|s| s.start_us).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.start_us.saturating_add(s.duration_us))
        .max()
        .unwrap_or(t0);
    let total = end.saturating_sub(t0).max(1);
    let depths = depths(spans);
    let rows = u32::try_from(spans.len()).unwrap_or(u32::MAX);
    let height = rows.saturating_mul(ROW).saturating_add(ROW);
    let width = LABEL + BARS + 10;
    let scale = |us: u64| (us as f64 / total as f64) * f64::from(BARS);
    html! {
        p.hint { (spans.len()) " spans over " (ms(total)) "." }
        div.waterfall {
            svg role="img" aria-label="Trace waterfall" viewBox=(format!("0 0 {width} {height}"))
                width=(width) height=(height) xmlns="http://www.w3.org/2000/svg" {
                text x=(LABEL) y="14" font-size="11" fill="#64748b" { "0" }
                text x=(LABEL + BARS) y="14" font-size="11" fill="#64748b" text-anchor="end" { (ms(total)) }
                @for (i, (span, depth)) in spans.iter().zip(&depths).enumerate() {
                    @let y = u32::try_from(i).unwrap_or(0) * ROW + ROW;
                    @let x = f64::from(LABEL) + scale(span.start_us.saturating_sub(t0));
                    @let w = scale(span.duration_us).max(1.0);
                    @let fill = if span.error.is_some() { "#dc2626" } else { "#0f766e" };
                    g {
                        title {
                            (span.service) " · " (span.name) " · starts at "
                            (ms(span.start_us.saturating_sub(t0))) ", takes " (ms(span.duration_us))
                            @if let Some(error) = &span.error { " · error: " (error) }
                        }
                        text x=(4 + 10 * (*depth).min(12)) y=(y + 15) font-size="12" fill="#0f172a" {
                            (span.service) " · " (span.name)
                        }
                        rect x=(format!("{x:.1}")) y=(y + 4) width=(format!("{w:.1}")) height=(ROW - 8)
                            rx="2" fill=(fill) {}
                    }
                }
            }
        }
        table.spans {
            thead { tr { th { "Service" } th { "Span" } th { "Kind" } th { "Start" } th { "Duration" } th { "Error" } } }
            tbody {
                @for span in spans {
                    tr {
                        td { (span.service) }
                        td { (span.name) }
                        td { (span.kind) }
                        td { (ms(span.start_us.saturating_sub(t0))) }
                        td { (ms(span.duration_us)) }
                        td { @if let Some(error) = &span.error { (error) } }
                    }
                }
            }
        }
    }
}

/// The trace section of the order page.
pub(crate) fn section(trace_id: &str) -> Markup {
    html! {
        section.panel aria-labelledby="trace-heading" {
            h2 #trace-heading { "Trace" }
            @match spans_of(trace_id) {
                Some(spans) => {
                    (waterfall(&spans))
                    p { a href=(format!("/ops/traces/{trace_id}")) { "The whole trace" } }
                }
                None => p.hint {
                    "Spans are not kept: set telemetry.recent_spans (or point telemetry.otlp_endpoint at a collector) to see the checkout's trace."
                },
            }
        }
    }
}

/// `GET /ops/traces/{trace_id}`.
pub(crate) async fn trace(
    State(_state): State<AppState>,
    visitor: Visitor,
    Path(trace_id): Path<String>,
) -> Result<Markup, PageError> {
    let here = format!("/ops/traces/{}", crate::api::segment(&trace_id));
    super::admin(&visitor, &here)?;
    let valid = trace_id.len() == 32
        && trace_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/ops" { "Operations" } " / trace" }
        h1 { "Trace " code { (trace_id) } }
        @if !valid {
            p.error { "A trace id is 32 lower-case hex digits." }
        } @else {
            @match spans_of(&trace_id) {
                Some(spans) => (waterfall(&spans)),
                None => p.hint { "Spans are not kept in this process: set telemetry.recent_spans." },
            }
        }
    };
    Ok(page("Trace · Operations", &visitor, Section::Ops, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: &str, start: u64, error: bool) -> SpanRecord {
        SpanRecord {
            trace_id: "a".repeat(32),
            span_id: id.to_owned(),
            parent_span_id: parent.to_owned(),
            name: format!("span {id}"),
            service: "ordering".to_owned(),
            kind: "internal",
            start_us: start,
            duration_us: 1000,
            error: error.then(|| "declined".to_owned()),
            attributes: Vec::new(),
        }
    }

    #[test]
    fn the_waterfall_indents_children_and_marks_errors() {
        let spans = [
            span("a", "", 0, false),
            span("b", "a", 500, false),
            span("c", "b", 800, true),
        ];
        assert_eq!(depths(&spans), [0, 1, 2]);
        let svg = waterfall(&spans).into_string();
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert!(svg.contains("#dc2626"), "the failed span is red: {svg}");
        assert!(svg.contains("ordering · span c"), "{svg}");
        assert!(!svg.contains("<script") && !svg.contains("style="), "{svg}");
    }
}
