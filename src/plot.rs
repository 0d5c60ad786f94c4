//! Figures for the experiments: PNG line and bar charts drawn with `plotters` (text through the system's fonts,
//! found by fontconfig: Debian's `fonts-dejavu-core`). Every figure is written next to the CSV it was drawn from.
#![forbid(unsafe_code)]

use plotters::prelude::*;
use std::path::Path;

/// One line of a line chart, or one colour of a bar chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const SIZE: (u32, u32) = (1000, 620);

fn color(i: usize) -> RGBColor {
    // Distinguishable on white and in grey scale.
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(23, 190, 207),
        RGBColor(127, 127, 127),
    ];
    C[i % C.len()]
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e} (the figures need the system's fonts: Debian packages fontconfig and fonts-dejavu-core)")
}

fn y_range(values: impl Iterator<Item = f64>) -> Result<(f64, f64), String> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        if !v.is_finite() {
            return Err(format!("cannot plot a non-finite value {v}"));
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return Err("nothing to plot".into());
    }
    Ok((0f64.min(lo), if hi > 0.0 { hi * 1.1 } else { 1.0 }))
}

/// A line chart with markers; `log2_x` spaces the x axis by powers of two (message sizes), `log_y` makes the y
/// axis logarithmic (series that differ by orders of magnitude).
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, log2_x: bool, log_y: bool, series: &[Series]) -> Result<(), String> {
    let (y0, y1) = y_range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)))?;
    let tx = |x: f64| if log2_x { x.max(1.0).log2() } else { x };
    let (x0, x1) = series.iter().flat_map(|s| s.points.iter().map(|p| tx(p.0))).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let xr = x0..x1.max(x0 + 1.0);
    let x_labels = if log2_x { (x1 - x0) as usize + 1 } else { 10 };
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err("figure"))?;
    let mut builder = ChartBuilder::on(&root);
    builder.caption(title, ("sans-serif", 24)).margin(16).x_label_area_size(50).y_label_area_size(90);
    let x_fmt = move |x: &f64| if log2_x { format!("{}", 2f64.powf(*x).round()) } else { format!("{x}") };
    // The two y axes have different coordinate types: one generic body draws on either.
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart.map_err(err("figure"))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .x_labels(x_labels)
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&|y: &f64| format!("{y:.0}"))
                .draw()
                .map_err(err("figure"))?;
            for (i, s) in series.iter().enumerate() {
                let c = color(i);
                let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (tx(x), y)).collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(err("figure"))?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
                chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled()))).map_err(err("figure"))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(err("figure"))?;
        }};
    }
    if log_y {
        let lo = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(f64::INFINITY, f64::min);
        if lo <= 0.0 {
            return Err(format!("a logarithmic axis cannot show {lo}"));
        }
        draw!(builder.build_cartesian_2d(xr, (lo / 1.5..y1 * 1.5).log_scale()));
    } else {
        draw!(builder.build_cartesian_2d(xr, y0..y1));
    }
    root.present().map_err(err("figure"))
}

/// Grouped bars: one group per label in `groups`, one bar per series in each group (series point x = group
/// index; a series without a point for a group leaves a gap).
pub fn bar_chart(path: &Path, title: &str, y_label: &str, groups: &[String], series: &[Series]) -> Result<(), String> {
    let (_, y1) = y_range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)))?;
    let n = groups.len().max(1);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err("figure"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..y1)
        .map_err(err("figure"))?;
    let labels = groups.to_vec();
    let x_fmt = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_label)
        .x_labels(2 * n + 1)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|y: &f64| format!("{y:.0}"))
        .draw()
        .map_err(err("figure"))?;
    let width = 0.8 / series.len().max(1) as f64;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        let left = -0.4 + i as f64 * width;
        chart
            .draw_series(s.points.iter().map(|&(g, y)| Rectangle::new([(g + left, 0.0), (g + left + width * 0.9, y)], c.filled())))
            .map_err(err("figure"))?
            .label(s.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err("figure"))?;
    root.present().map_err(err("figure"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_ok(path: &Path) {
        let b = std::fs::read(path).unwrap();
        assert!(b.len() > 2000 && b.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG of a figure", path.display());
    }

    #[test]
    fn figures_are_pngs() {
        let dir = std::env::temp_dir().join(format!("questv-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = vec![
            Series { name: "a".into(), points: vec![(4.0, 10.0), (8.0, 12.0), (4096.0, 90.0)] },
            Series { name: "b".into(), points: vec![(4.0, 20.0), (4096.0, 40.0)] },
        ];
        line_chart(&dir.join("l.png"), "t", "x", "y", true, true, &s).unwrap();
        png_ok(&dir.join("l.png"));
        bar_chart(&dir.join("b.png"), "t", "y", &["one".into(), "two".into(), "three".into()], &s.iter().map(|s| Series { name: s.name.clone(), points: vec![(0.0, 1.0), (2.0, 3.0)] }).collect::<Vec<_>>()).unwrap();
        png_ok(&dir.join("b.png"));
        assert!(line_chart(&dir.join("e.png"), "t", "x", "y", false, false, &[]).is_err());
        assert!(line_chart(&dir.join("n.png"), "t", "x", "y", false, false, &[Series { name: "n".into(), points: vec![(1.0, f64::NAN)] }]).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
