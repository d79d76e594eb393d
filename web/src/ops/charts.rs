//! The console's charts of the last 15 minutes, server-rendered SVG (no script, no chart
//! library): requests/s, error rate and p99 per service, saga outcomes per minute, outbox
//! pending rows and oldest age per service. The points come from the background
//! [`Sampler`](super::sampler::Sampler), so they are there as soon as the console opens.

use std::time::Instant;

use maud::{Markup, html};

use super::sampler::{Chart, History, SPAN, Series};

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 140.0;
const LEFT: f64 = 48.0;
/// Ten colours: the gateway and the eight services each get their own.
const COLOURS: [&str; 10] = [
    "#0f766e", "#2563eb", "#d97706", "#7c3aed", "#dc2626", "#0891b2", "#65a30d", "#db2777",
    "#475569", "#a16207",
];

/// What one chart shows.
struct Spec {
    chart: Chart,
    /// `data-chart`, for tests and styles.
    id: &'static str,
    title: &'static str,
    unit: &'static str,
}

const TRAFFIC: [Spec; 3] = [
    Spec {
        chart: Chart::Requests,
        id: "requests",
        title: "Requests per second",
        unit: "req/s",
    },
    Spec {
        chart: Chart::ErrorRate,
        id: "error-rate",
        title: "Error rate",
        unit: "%",
    },
    Spec {
        chart: Chart::P99,
        id: "p99",
        title: "p99 latency",
        unit: "ms",
    },
];

const SAGAS: Spec = Spec {
    chart: Chart::Sagas,
    id: "sagas",
    title: "Saga outcomes per minute",
    unit: "/min",
};

const OUTBOX: [Spec; 2] = [
    Spec {
        chart: Chart::OutboxPending,
        id: "outbox-pending",
        title: "Outbox rows not yet published",
        unit: "rows",
    },
    Spec {
        chart: Chart::OutboxAge,
        id: "outbox-age",
        title: "Age of the oldest unpublished row",
        unit: "s",
    },
];

/// Every chart, in three groups: traffic, sagas, outbox.
pub(crate) fn render(history: &History, now: Instant) -> Markup {
    let draw = |spec: &Spec| chart(spec, &history.series(spec.chart, now));
    html! {
        h3 { "Traffic per service" }
        div.charts { @for spec in &TRAFFIC { (draw(spec)) } }
        h3 { "Checkout sagas" }
        div.charts { (draw(&SAGAS)) }
        h3 { "Outbox lag per service" }
        div.charts { @for spec in &OUTBOX { (draw(spec)) } }
    }
}

/// The colour of series `index` named `name` of `chart`: saga outcomes by meaning.
fn colour(chart: Chart, index: usize, name: &str) -> &'static str {
    if chart == Chart::Sagas {
        if name.ends_with(" started") {
            return "#2563eb";
        }
        if name.ends_with(" completed") {
            return "#16a34a";
        }
        if name.ends_with(" compensated") {
            return "#dc2626";
        }
    }
    COLOURS[index % COLOURS.len()]
}

/// One line chart: x from 15 minutes ago (left) to now (right), y from 0 to the largest
/// value; one polyline per run of each series (a gap where readings lacked it, a dot for a
/// lone point), with a legend.
fn chart(spec: &Spec, series: &[Series]) -> Markup {
    let peak = series
        .iter()
        .flat_map(|s| s.runs.iter().flatten().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    // The value of the upper grid line, with a tenth of room above it.
    let scale = if peak > 0.0 { peak } else { 1.0 };
    let top = scale * 1.1;
    let span = SPAN.as_secs_f64();
    let x = |ago: f64| LEFT + (1.0 - (ago / span).min(1.0)) * (WIDTH - LEFT);
    let y = |v: f64| HEIGHT - 18.0 - (v / top) * (HEIGHT - 30.0);
    let title = spec.title;
    html! {
        figure.chart data-chart=(spec.id) {
            // The scale in words as well, legible however small the drawing is scaled.
            figcaption {
                (title)
                @if !series.is_empty() { " " small { "peak " (format!("{peak:.1}")) " " (spec.unit) } }
            }
            svg role="img" aria-label=(format!("{title} over the last 15 minutes"))
                viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT)
                xmlns="http://www.w3.org/2000/svg" {
                line x1=(LEFT) y1=(y(0.0)) x2=(WIDTH) y2=(y(0.0)) stroke="#cbd5e1" {}
                line x1=(LEFT) y1=(y(scale)) x2=(WIDTH) y2=(y(scale)) stroke="#eef2f6" {}
                text x=(LEFT + 4.0) y=(y(scale) - 3.0) font-size="10" fill="#64748b" {
                    (format!("{scale:.1}")) " " (spec.unit)
                }
                text x=(LEFT - 4.0) y=(y(0.0) + 4.0) font-size="10" text-anchor="end" fill="#64748b" { "0" }
                text x=(LEFT) y=(HEIGHT - 2.0) font-size="10" fill="#64748b" { "−15 min" }
                text x=(WIDTH) y=(HEIGHT - 2.0) font-size="10" text-anchor="end" fill="#64748b" { "now" }
                @if series.is_empty() {
                    text x=((LEFT + WIDTH) / 2.0) y=(HEIGHT / 2.0) font-size="11" text-anchor="middle" fill="#64748b" {
                        "No readings yet"
                    }
                }
                @for (i, s) in series.iter().enumerate() {
                    @let stroke = colour(spec.chart, i, &s.name);
                    @let points = s.runs.iter().map(Vec::len).sum::<usize>();
                    @let peak = s.runs.iter().flatten().map(|p| p.1).fold(0.0_f64, f64::max);
                    g data-series=(s.name) data-points=(points) data-peak=(format!("{peak:.3}")) {
                        title { (s.name) }
                        @for run in &s.runs {
                            @if let [(ago, v)] = run.as_slice() {
                                circle cx=(format!("{:.1}", x(*ago))) cy=(format!("{:.1}", y(*v))) r="2" fill=(stroke) {}
                            } @else {
                                polyline fill="none" stroke=(stroke) stroke-width="1.5"
                                    points=(run.iter().map(|(ago, v)| format!("{:.1},{:.1}", x(*ago), y(*v))).collect::<Vec<_>>().join(" ")) {}
                            }
                        }
                    }
                }
            }
            ul.legend {
                @for (i, s) in series.iter().enumerate() {
                    li { svg width="10" height="10" aria-hidden="true" { rect width="10" height="10" fill=(colour(spec.chart, i, &s.name)) {} } " " (s.name) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_chart_is_drawn_with_its_series_and_no_script() {
        let start = Instant::now();
        let mut history = History::new(Duration::from_secs(10));
        for i in 0..5_u64 {
            let at = start + Duration::from_secs(10 * i);
            let mut values = vec![
                ((Chart::Requests, "catalog".to_owned()), 2.0),
                ((Chart::Sagas, "checkout started".to_owned()), 6.0),
                ((Chart::Sagas, "checkout completed".to_owned()), 4.0),
                ((Chart::OutboxPending, "ordering".to_owned()), 1.0),
            ];
            // The payment relay answers only in the last reading: a lone point.
            if i == 4 {
                values.push(((Chart::OutboxAge, "payment".to_owned()), 0.5));
            }
            history.push(at, values);
        }
        let svg = render(&history, start + Duration::from_secs(40)).into_string();
        assert_eq!(svg.matches("<figure").count(), 6, "{svg}");
        for id in [
            "requests",
            "error-rate",
            "p99",
            "sagas",
            "outbox-pending",
            "outbox-age",
        ] {
            assert!(
                svg.contains(&format!(r#"data-chart="{id}""#)),
                "{id}: {svg}"
            );
        }
        assert!(
            svg.contains(r#"data-series="checkout started" data-points="5" data-peak="6.000""#),
            "{svg}"
        );
        assert!(svg.contains("#16a34a"), "completed is green: {svg}");
        assert!(
            svg.contains(r#"data-series="payment" data-points="1""#),
            "{svg}"
        );
        assert_eq!(svg.matches("<circle").count(), 1, "the lone point: {svg}");
        // Four series of five points are lines; the error-rate and p99 charts are empty.
        assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
        assert_eq!(svg.matches("No readings yet").count(), 2, "{svg}");
        assert!(!svg.contains("<script") && !svg.contains("style="), "{svg}");
    }
}
