//! `/ops/reporting`: the reporting service's read models — the order funnel (placed,
//! confirmed, cancelled by reason) and revenue per day — as server-rendered SVG bars, read
//! through the gateway (`/api/v1/reporting/funnel`, `/api/v1/reporting/revenue`).

use axum::extract::State;
use maud::{Markup, html};
use tideway_reporting_api::{FUNNEL_PATH, Funnel, REVENUE_PATH, RevenueReport};

use super::admin;
use crate::{
    AppState,
    error::PageError,
    layout::{Section, money, page},
    session::Visitor,
};

/// The catalog's currency.
const CURRENCY: &str = "EUR";
/// The most days of revenue drawn (the latest).
const DAYS_SHOWN: usize = 30;
/// Width of the bar area of a chart, in SVG units.
const WIDTH: i64 = 600;
/// Height of one bar row.
const ROW: i64 = 26;
/// Width kept for the labels left of the bars.
const LABEL: i64 = 230;

/// `GET /ops/reporting`.
pub(crate) async fn page_of_reports(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Markup, PageError> {
    let user = admin(&visitor, "/ops/reporting")?;
    let (funnel, revenue) = tokio::join!(
        state.api.get::<Funnel>(&user.token, FUNNEL_PATH),
        state.api.get::<RevenueReport>(&user.token, REVENUE_PATH),
    );
    let body = html! {
        h1 { "Reports" }
        p.hint { "Read models the reporting service builds from the bus's events alone; " code { "tideway replay reporting" } " rebuilds them." }
        section.panel #panel-funnel aria-labelledby="funnel-heading" {
            h2 #funnel-heading { "Order funnel" }
            @match funnel {
                Err(err) => p.alert role="alert" { "The reporting service did not answer: " (err) }
                Ok(funnel) => (funnel_chart(&funnel)),
            }
        }
        section.panel #panel-revenue aria-labelledby="revenue-heading" {
            h2 #revenue-heading { "Revenue per day" }
            @match revenue {
                Err(err) => p.alert role="alert" { "The reporting service did not answer: " (err) }
                Ok(report) if report.days.is_empty() => p.empty { "No confirmed orders yet." }
                Ok(report) => (revenue_chart(&report)),
            }
        }
    };
    Ok(page("Reports", &visitor, Section::Ops, body))
}

/// The funnel as horizontal bars: placed, confirmed, cancelled, then each reason.
fn funnel_chart(funnel: &Funnel) -> Markup {
    let mut rows: Vec<(String, i64, &str)> = vec![
        ("Placed".to_owned(), funnel.placed, "placed"),
        ("Confirmed".to_owned(), funnel.confirmed, "confirmed"),
        ("Cancelled".to_owned(), funnel.cancelled, "cancelled"),
    ];
    for reason in &funnel.cancelled_by_reason {
        rows.push((format!("· {}", reason.reason), reason.orders, "reason"));
    }
    let labelled: Vec<(String, i64, String, &str)> = rows
        .into_iter()
        .map(|(label, n, kind)| (label, n, n.to_string(), kind))
        .collect();
    bars(
        "funnel",
        "Orders placed, confirmed and cancelled",
        &labelled,
    )
}

/// The latest days' revenue as horizontal bars, oldest first.
fn revenue_chart(report: &RevenueReport) -> Markup {
    let skip = report.days.len().saturating_sub(DAYS_SHOWN);
    let rows: Vec<(String, i64, String, &str)> = report.days[skip..]
        .iter()
        .map(|day| {
            (
                day.day.clone(),
                day.revenue_minor,
                format!(
                    "{} · {} orders",
                    money(day.revenue_minor, CURRENCY),
                    day.orders
                ),
                "revenue",
            )
        })
        .collect();
    bars("revenue", "Revenue per day", &rows)
}

/// Horizontal bars scaled to the largest value: (label, value, value as shown, kind).
fn bars(id: &str, title: &str, rows: &[(String, i64, String, &str)]) -> Markup {
    let max = rows.iter().map(|(_, n, ..)| *n).max().unwrap_or(0).max(1);
    let height = ROW * i64::try_from(rows.len()).unwrap_or(0) + 4;
    let total = LABEL + WIDTH + 150;
    html! {
        svg.chart.bars #(format!("chart-{id}")) role="img" aria-label=(title)
            viewBox=(format!("0 0 {total} {height}")) width="100%" {
            title { (title) }
            @for (i, (label, value, shown, kind)) in rows.iter().enumerate() {
                @let y = ROW * i64::try_from(i).unwrap_or(0) + 2;
                @let width = (value.max(&0) * WIDTH / max).max(1);
                g data-kind=(kind) data-value=(value) {
                    text x=(LABEL - 8) y=(y + 17) text-anchor="end" font-size="13" { (label) }
                    rect x=(LABEL) y=(y) width=(width) height=(ROW - 6) rx="3"
                        fill=(if *kind == "cancelled" || *kind == "reason" { "#f59e0b" } else { "#0f766e" }) {}
                    text x=(LABEL + width + 6) y=(y + 17) font-size="13" { (shown) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tideway_reporting_api::{CancelReason, RevenueDay};

    use super::*;

    #[test]
    fn the_funnel_and_revenue_are_bars_scaled_to_the_largest() {
        let funnel = Funnel {
            placed: 10,
            confirmed: 6,
            cancelled: 4,
            cancelled_by_reason: vec![CancelReason {
                reason: "payment declined".into(),
                orders: 4,
            }],
        };
        let svg = funnel_chart(&funnel).into_string();
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(
            svg.contains(&format!("width=\"{WIDTH}\"")),
            "placed is the widest: {svg}"
        );
        assert!(
            svg.contains(&format!("width=\"{}\"", 6 * WIDTH / 10)),
            "{svg}"
        );
        assert!(svg.contains("payment declined"));

        let report = RevenueReport {
            days: (1..=40)
                .map(|d| RevenueDay {
                    day: format!("2026-01-{d:02}"),
                    orders: 1,
                    revenue_minor: d * 100,
                })
                .collect(),
        };
        let svg = revenue_chart(&report).into_string();
        assert_eq!(svg.matches("<rect").count(), DAYS_SHOWN);
        assert!(!svg.contains("2026-01-10<"), "only the latest days: {svg}");
        assert!(svg.contains("€40.00 · 1 orders"));
    }

    #[test]
    fn an_empty_funnel_draws_without_dividing_by_zero() {
        let funnel = Funnel {
            placed: 0,
            confirmed: 0,
            cancelled: 0,
            cancelled_by_reason: Vec::new(),
        };
        assert_eq!(
            funnel_chart(&funnel).into_string().matches("<rect").count(),
            3
        );
    }
}
