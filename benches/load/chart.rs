//! The load chart: hit ratio above, latency below (log scale), the outage shaded.

use std::ops::Range;

use plotters::prelude::*;

use crate::sample::Point;

const OUTAGE: RGBColor = RGBColor(250, 220, 220);
const RATIO: RGBColor = RGBColor(31, 119, 180);
const P50: RGBColor = RGBColor(44, 160, 44);
const P99: RGBColor = RGBColor(255, 127, 14);
const REDIS: RGBColor = RGBColor(90, 90, 90);
/// One line's value at a point, if it has one.
type Value = Box<dyn Fn(&Point) -> Option<f64>>;

/// Where the latency axis starts (ms).
const FLOOR_MS: f64 = 0.1;

pub(crate) fn write(
    path: &str,
    title: &str,
    points: &[Point],
    outage: &Range<f64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (top, bottom) = root.split_vertically(270);
    let end = points.last().map_or(1.0, |p| p.t).ceil();

    let mut ratio = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, 0f64..100f64)?;
    ratio
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("hit ratio %")
        .draw()?;
    ratio.draw_series(std::iter::once(Rectangle::new(
        [(outage.start, 0.0), (outage.end, 100.0)],
        OUTAGE.filled(),
    )))?;
    ratio
        .draw_series(LineSeries::new(
            points
                .iter()
                .filter_map(|p| p.hit_ratio.map(|r| (p.t, r * 100.0))),
            RATIO.stroke_width(2),
        ))?
        .label("hit ratio: (hit + null_hit + stale + coalesced) / requests, per 0.5 s")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RATIO.stroke_width(2)));
    ratio
        .draw_series(
            points
                .iter()
                .filter(|p| p.circuit >= 2.0)
                .map(|p| Circle::new((p.t, 50.0), 3, RED.filled())),
        )?
        .label("circuit open (redis_cache_circuit_state = 2)")
        .legend(|(x, y)| Circle::new((x + 8, y), 3, RED.filled()));
    ratio
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;

    let top_ms = points
        .iter()
        .map(|p| p.http_p99_ms.max(p.redis_p99_ms.unwrap_or(0.0)))
        .fold(1.0f64, f64::max)
        * 2.0;
    let mut latency = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, (FLOOR_MS..top_ms).log_scale())?;
    latency
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("latency, ms (log)")
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;
    latency.draw_series(std::iter::once(Rectangle::new(
        [(outage.start, FLOOR_MS), (outage.end, top_ms)],
        OUTAGE.filled(),
    )))?;
    let series: [(&str, RGBColor, Value); 3] = [
        ("HTTP p50 (client)", P50, Box::new(|p| Some(p.http_p50_ms))),
        ("HTTP p99 (client)", P99, Box::new(|p| Some(p.http_p99_ms))),
        (
            "Redis GET p99 (db_client_operation_duration_seconds)",
            REDIS,
            Box::new(|p| p.redis_p99_ms),
        ),
    ];
    for (name, color, value) in series {
        // A line per run of samples, so an interval without data is a gap, not a slope.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for p in points {
            match (value(p), runs.last_mut()) {
                (Some(v), Some(run)) => run.push((p.t, v.max(FLOOR_MS))),
                _ => runs.push(Vec::new()),
            }
        }
        for (i, run) in runs.into_iter().filter(|r| !r.is_empty()).enumerate() {
            let drawn = latency.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
            if i == 0 {
                drawn.label(name).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
            }
        }
    }
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
