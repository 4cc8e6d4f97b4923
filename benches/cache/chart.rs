//! The hit-path charts, as SVG: ops/s by concurrent callers for variants 1–4, and for the
//! near cache's variants a–d (on a log scale: they span three orders of magnitude).

use plotters::{coord::ranged1d::ValueFormatter, prelude::*};

use crate::{Row, near::NearRow};

const SERIES: [(&str, RGBColor); 4] = [
    ("1 multiplexed GET + decode", RGBColor(90, 90, 90)),
    ("2 #[redis_cache]", RGBColor(31, 119, 180)),
    ("3 cached AsyncRedisCache", RGBColor(255, 127, 14)),
    ("4 bb8-redis defaults", RGBColor(44, 160, 44)),
];

const NEAR_SERIES: [(&str, RGBColor); 4] = [
    ("a multiplexed GET + decode", RGBColor(90, 90, 90)),
    ("b #[redis_cache]", RGBColor(31, 119, 180)),
    ("c #[redis_cache] + near_cache", RGBColor(214, 39, 40)),
    ("d amalgam L1", RGBColor(148, 103, 189)),
];

type Error = Box<dyn std::error::Error>;

/// Grouped bars: one group per concurrency, one bar per variant.
pub(crate) fn write(path: &str, rows: &[Row]) -> Result<(), Error> {
    let groups: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.callers,
                [
                    r.hand.ops_per_sec,
                    r.ours.ops_per_sec,
                    r.peer.ops_per_sec,
                    r.bb8.ops_per_sec,
                ],
            )
        })
        .collect();
    let top = groups
        .iter()
        .flat_map(|g| g.1)
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    bars(
        path,
        "Hit path: ops/s by concurrent callers (higher is better)",
        &SERIES,
        &groups,
        0f64..top,
        0.0,
        SeriesLabelPosition::UpperLeft,
    )
}

/// The near cache's variants a–d, grouped by concurrency, ops/s on a log scale.
pub(crate) fn write_near(path: &str, rows: &[NearRow]) -> Result<(), Error> {
    let groups: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.callers,
                [
                    r.hand.ops_per_sec,
                    r.ours.ops_per_sec,
                    r.near.ops_per_sec,
                    r.amalgam.ops_per_sec,
                ],
            )
        })
        .collect();
    let values = groups.iter().flat_map(|g| g.1);
    // Room above the bars for the legend.
    let top = values.clone().fold(1.0f64, f64::max) * 12.0;
    let bottom = values.fold(f64::INFINITY, f64::min).max(1.0) / 3.0;
    bars(
        path,
        "Near cache, hit path: ops/s by concurrent callers (log scale, higher is better)",
        &NEAR_SERIES,
        &groups,
        (bottom..top).log_scale(),
        bottom,
        SeriesLabelPosition::UpperLeft,
    )
}

/// Draws `groups` (callers, one value per series) as grouped bars from `base` up, on `y`.
fn bars<Y>(
    path: &str,
    caption: &str,
    series: &[(&str, RGBColor)],
    groups: &[(usize, [f64; 4])],
    y: Y,
    base: f64,
    legend: SeriesLabelPosition,
) -> Result<(), Error>
where
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = SVGBackend::new(path, (860, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = groups.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5f64..n - 0.5, y)?;
    let labels: Vec<String> = groups.iter().map(|g| g.0.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
        .x_desc("concurrent callers")
        .y_desc("ops/s")
        .draw()?;
    let width = 0.8 / series.len() as f64;
    for (s, (name, color)) in series.iter().enumerate() {
        let color = *color;
        chart
            .draw_series(groups.iter().enumerate().map(|(g, (_, values))| {
                let x0 = g as f64 - 0.4 + s as f64 * width;
                Rectangle::new([(x0, base), (x0 + width * 0.9, values[s])], color.filled())
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
