//! `plot.png`: latency percentiles (top) and throughput (bottom) per second of the run.
//!
//! Drawn with plotters' bitmap backend; text goes through `ab_glyph` with DejaVu Sans
//! embedded in the binary, so nothing needs fontconfig or freetype at build or run time.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::{prelude::*, style::FontStyle};

use super::report::{Percentiles, Report, SecondReport};

/// A line of a chart: its name, its colour, and its value at a point.
type Line<T> = (&'static str, RGBColor, Box<dyn Fn(&T) -> f64>);

/// DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Draws the report's timeline into `file`.
pub fn draw(report: &Report, file: &Path) -> anyhow::Result<()> {
    plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
        .map_err(|_| anyhow!("the embedded font cannot be read"))?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        draw_on(report, &root)?;
        root.present()
            .map_err(|err| anyhow!("finishing the plot: {err}"))?;
    }
    // Encoded here with `png` rather than through plotters' `image` encoder, which would
    // bring in decoders for formats we never write.
    let out =
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(out), WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&pixels))
        .with_context(|| format!("writing {}", file.display()))
}

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 900;

fn draw_on(
    report: &Report,
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
) -> anyhow::Result<()> {
    let fail = |err: DrawingAreaErrorKind<_>| anyhow!("drawing the plot: {err}");
    root.fill(&WHITE).map_err(fail)?;
    let title = format!(
        "{} · {} · {:.0} req/s intended for {:.0} s",
        report.target, report.mix, report.intended_rate, report.duration_secs
    );
    let root = root
        .titled(&title, (FAMILY, 22))
        .map_err(|err| anyhow!("drawing the title: {err}"))?;
    let (top, bottom) = root.split_vertically(480);
    let seconds = report.timeline.len().max(1) as f64;

    // Latency on a log axis: percentiles span orders of magnitude under a stall.
    let latency: Vec<_> = report.timeline.iter().filter(|s| s.scheduled > 0).collect();
    let floor = latency
        .iter()
        .map(|s| s.latency_ms.p50)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min)
        .clamp(0.002, 1.0)
        / 2.0;
    let highest = latency
        .iter()
        .map(|s| s.latency_ms.max)
        .fold(1.0_f64, f64::max)
        * 1.5;
    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .caption(
            "latency from the intended send time (ms, log scale)",
            (FAMILY, 18),
        )
        .build_cartesian_2d(0f64..seconds, (floor..highest).log_scale())
        .map_err(|err| anyhow!("drawing the latency chart: {err}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .label_style((FAMILY, 14))
        .draw()
        .map_err(|err| anyhow!("drawing the latency axes: {err}"))?;
    let lines: [Line<Percentiles>; 4] = [
        ("p50", RGBColor(31, 119, 180), Box::new(|p| p.p50)),
        ("p90", RGBColor(44, 160, 44), Box::new(|p| p.p90)),
        ("p99", RGBColor(255, 127, 14), Box::new(|p| p.p99)),
        ("max", RGBColor(214, 39, 40), Box::new(|p| p.max)),
    ];
    for (name, color, value) in lines {
        chart
            .draw_series(LineSeries::new(
                latency
                    .iter()
                    .map(|s| (s.second as f64 + 0.5, value(&s.latency_ms).max(floor))),
                color.stroke_width(2),
            ))
            .map_err(|err| anyhow!("drawing {name}: {err}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|err| anyhow!("drawing the latency legend: {err}"))?;

    // Throughput: answers per second against the intended rate.
    let highest = report
        .timeline
        .iter()
        .map(|s| s.completed as f64)
        .fold(report.intended_rate, f64::max)
        * 1.15
        + 1.0;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .caption("throughput (answers per second)", (FAMILY, 18))
        .build_cartesian_2d(0f64..seconds, 0f64..highest)
        .map_err(|err| anyhow!("drawing the throughput chart: {err}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("req/s")
        .label_style((FAMILY, 14))
        .draw()
        .map_err(|err| anyhow!("drawing the throughput axes: {err}"))?;
    let intended = report.intended_rate;
    let series: [Line<SecondReport>; 3] = [
        (
            "intended",
            RGBColor(127, 127, 127),
            Box::new(move |_| intended),
        ),
        (
            "ok",
            RGBColor(31, 119, 180),
            Box::new(|s| (s.completed - s.failed) as f64),
        ),
        (
            "errors",
            RGBColor(214, 39, 40),
            Box::new(|s| s.failed as f64),
        ),
    ];
    for (name, color, value) in series {
        chart
            .draw_series(LineSeries::new(
                report
                    .timeline
                    .iter()
                    .map(|s| (s.second as f64 + 0.5, value(s))),
                color.stroke_width(2),
            ))
            .map_err(|err| anyhow!("drawing {name}: {err}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|err| anyhow!("drawing the throughput legend: {err}"))?;
    Ok(())
}
