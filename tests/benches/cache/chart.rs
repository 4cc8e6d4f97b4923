//! The hit-path chart: ops/s by concurrent callers for variants 1–4, as SVG.

use plotters::prelude::*;

use crate::Row;

const SERIES: [(&str, RGBColor); 4] = [
    ("1 multiplexed GET + decode", RGBColor(90, 90, 90)),
    ("2 #[redis_cache]", RGBColor(31, 119, 180)),
    ("3 cached AsyncRedisCache", RGBColor(255, 127, 14)),
    ("4 bb8-redis defaults", RGBColor(44, 160, 44)),
];

/// Grouped bars: one group per concurrency, one bar per variant.
pub(crate) fn write(path: &str, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    let values = |r: &Row| {
        [
            r.hand.ops_per_sec,
            r.ours.ops_per_sec,
            r.peer.ops_per_sec,
            r.bb8.ops_per_sec,
        ]
    };
    let top = rows.iter().flat_map(values).fold(0.0f64, f64::max).max(1.0) * 1.15;
    let root = SVGBackend::new(path, (860, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let groups = rows.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Hit path: ops/s by concurrent callers (higher is better)",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5f64..groups - 0.5, 0f64..top)?;
    let labels: Vec<String> = rows.iter().map(|r| r.callers.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(rows.len())
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
    let width = 0.8 / SERIES.len() as f64;
    for (s, (name, color)) in SERIES.iter().enumerate() {
        let color = *color;
        chart
            .draw_series(rows.iter().enumerate().map(|(g, r)| {
                let x0 = g as f64 - 0.4 + s as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, values(r)[s])],
                    color.filled(),
                )
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
