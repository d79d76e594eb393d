//! The console's charts: requests/s, error rate and p99 per service over the last 15
//! minutes, server-rendered SVG (no script, no chart library). The points are the traffic
//! panel's own readings, one kept every [`STEP`], so the history covers the time the console
//! has been watched since the process started.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use maud::{Markup, html};

use super::ServiceTraffic;

/// How far back the charts go.
pub(crate) const SPAN: Duration = Duration::from_secs(15 * 60);
/// One point per this much time at most.
pub(crate) const STEP: Duration = Duration::from_secs(10);

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 140.0;
const LEFT: f64 = 48.0;
const COLOURS: [&str; 8] = [
    "#0f766e", "#2563eb", "#d97706", "#7c3aed", "#dc2626", "#0891b2", "#65a30d", "#db2777",
];

/// The readings of the last [`SPAN`], bounded ([`SPAN`] / [`STEP`] points).
#[derive(Debug, Default)]
pub(crate) struct History {
    points: VecDeque<(Instant, Vec<ServiceTraffic>)>,
}

impl History {
    /// Keeps `rows` as the reading at `now`, unless one was kept less than [`STEP`] ago.
    pub(crate) fn record(&mut self, rows: &[ServiceTraffic], now: Instant) {
        if self
            .points
            .back()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) < STEP)
        {
            return;
        }
        self.points.push_back((now, rows.to_vec()));
        while self
            .points
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > SPAN)
        {
            self.points.pop_front();
        }
    }

    /// The series of `value` per service: `(seconds before now, value)`, oldest first.
    fn series(
        &self,
        now: Instant,
        value: impl Fn(&ServiceTraffic) -> Option<f64>,
    ) -> Vec<(String, Vec<(f64, f64)>)> {
        let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for (at, rows) in &self.points {
            let ago = now.saturating_duration_since(*at).as_secs_f64();
            for row in rows {
                let Some(v) = value(row) else { continue };
                match out.iter_mut().find(|(s, _)| *s == row.service) {
                    Some((_, points)) => points.push((ago, v)),
                    None => out.push((row.service.clone(), vec![(ago, v)])),
                }
            }
        }
        out
    }

    /// The three charts.
    pub(crate) fn render(&self, now: Instant) -> Markup {
        html! {
            (chart("Requests per second", "req/s", &self.series(now, |r| Some(r.requests_per_s))))
            (chart("Error rate", "%", &self.series(now, |r| Some(r.error_ratio * 100.0))))
            (chart("p99 latency", "ms", &self.series(now, |r| r.p99_ms)))
        }
    }
}

/// One line chart: x from 15 minutes ago (left) to now (right), y from 0 to the largest
/// value; one polyline per service, with a legend.
fn chart(title: &str, unit: &str, series: &[(String, Vec<(f64, f64)>)]) -> Markup {
    let top = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let span = SPAN.as_secs_f64();
    let x = |ago: f64| LEFT + (1.0 - (ago / span).min(1.0)) * (WIDTH - LEFT);
    let y = |v: f64| HEIGHT - 18.0 - (v / top) * (HEIGHT - 30.0);
    html! {
        figure.chart {
            figcaption { (title) }
            svg role="img" aria-label=(format!("{title} over the last 15 minutes"))
                viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT)
                xmlns="http://www.w3.org/2000/svg" {
                line x1=(LEFT) y1=(y(0.0)) x2=(WIDTH) y2=(y(0.0)) stroke="#cbd5e1" {}
                text x=(LEFT - 4.0) y=(y(top / 1.1) + 4.0) font-size="10" text-anchor="end" fill="#64748b" {
                    (format!("{:.1}", top / 1.1)) " " (unit)
                }
                text x=(LEFT - 4.0) y=(y(0.0) + 4.0) font-size="10" text-anchor="end" fill="#64748b" { "0" }
                text x=(LEFT) y=(HEIGHT - 2.0) font-size="10" fill="#64748b" { "−15 min" }
                text x=(WIDTH) y=(HEIGHT - 2.0) font-size="10" text-anchor="end" fill="#64748b" { "now" }
                @for (i, (service, points)) in series.iter().enumerate() {
                    @let colour = COLOURS[i % COLOURS.len()];
                    polyline fill="none" stroke=(colour) stroke-width="1.5"
                        points=(points.iter().map(|(ago, v)| format!("{:.1},{:.1}", x(*ago), y(*v))).collect::<Vec<_>>().join(" ")) {
                        title { (service) }
                    }
                }
            }
            ul.legend {
                @for (i, (service, _)) in series.iter().enumerate() {
                    li { svg width="10" height="10" aria-hidden="true" { rect width="10" height="10" fill=(COLOURS[i % COLOURS.len()]) {} } " " (service) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(service: &str, rps: f64) -> ServiceTraffic {
        ServiceTraffic {
            service: service.to_owned(),
            requests_per_s: rps,
            errors_per_s: 0.0,
            server_errors_per_s: 0.0,
            error_ratio: 0.0,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            requests_total: 0,
        }
    }

    #[test]
    fn the_history_keeps_fifteen_minutes_at_one_point_per_step() {
        let start = Instant::now();
        let mut history = History::default();
        for s in 0..2000_u64 {
            history.record(&[row("catalog", 1.0)], start + Duration::from_secs(s));
        }
        let max = usize::try_from(SPAN.as_secs() / STEP.as_secs()).unwrap() + 1;
        assert!(history.points.len() <= max, "{}", history.points.len());
        assert!(history.points.len() >= max - 1);
        let svg = history
            .render(start + Duration::from_secs(2000))
            .into_string();
        assert_eq!(svg.matches("<polyline").count(), 3, "{svg}");
        assert!(svg.contains("catalog") && !svg.contains("<script"), "{svg}");
    }
}
