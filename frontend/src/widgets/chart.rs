//! Line charts as inline SVG: nice ticks, a legend with each series' last value, and a
//! hover cursor that reads every series at the nearest step.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::format;

const W: f64 = 560.0;
const H: f64 = 210.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 34.0;

/// One line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// CSS colour.
    pub colour: &'static str,
    /// (x, y) in x order.
    pub points: Vec<(f64, f64)>,
}

/// Evenly spaced round tick values covering `[lo, hi]`; `whole` keeps them integers (steps).
pub fn ticks(lo: f64, hi: f64, target: usize, whole: bool) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let step = if whole { step.max(1.0).round() } else { step };
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn bounds(series: &[Series], fixed: Option<(f64, f64)>) -> Option<(f64, f64, f64, f64)> {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let mut any = false;
    for &(x, y) in pts {
        if x.is_finite() && y.is_finite() {
            any = true;
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if !any {
        return None;
    }
    if let Some((lo, hi)) = fixed {
        (y0, y1) = (lo, hi);
    }
    if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    if y1 <= y0 {
        let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.1 };
        (y0, y1) = (y0 - pad, y1 + pad);
    } else if fixed.is_none() {
        let pad = (y1 - y0) * 0.05;
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    Some((x0, x1, y0, y1))
}

/// A line chart of `series` against the step.
#[component]
pub fn LineChart(
    /// Heading above the chart.
    title: &'static str,
    /// Unit of the y axis, shown with the heading.
    unit: &'static str,
    /// Name of the x axis.
    #[prop(default = "step")]
    x_label: &'static str,
    /// The lines.
    #[prop(into)]
    series: Signal<Vec<Series>>,
    /// A fixed y range (e.g. 0–1 for accuracy).
    #[prop(optional)]
    y_range: Option<(f64, f64)>,
    /// Shown when there is nothing to draw.
    #[prop(default = "no points yet")]
    empty: &'static str,
) -> impl IntoView {
    let hover = RwSignal::new(None::<f64>);
    let on_move = move |ev: web_sys::MouseEvent| {
        let Some(el) = ev
            .current_target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let rect = el.get_bounding_client_rect();
        if rect.width() <= 0.0 {
            return;
        }
        let fx = (ev.client_x() as f64 - rect.left()) / rect.width() * W;
        hover.set(Some(((fx - LEFT) / (W - LEFT - RIGHT)).clamp(0.0, 1.0)));
    };
    let plot = move || {
        let data = series.get();
        let Some((x0, x1, y0, y1)) = bounds(&data, y_range) else {
            return view! { <p class="chart-empty">{empty}</p> }.into_any();
        };
        let sx = move |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let sy = move |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * (H - TOP - BOTTOM);
        let y_ticks = ticks(y0, y1, 4, false)
            .into_iter()
            .map(|t| {
                let y = sy(t);
                view! {
                    <line class="grid" x1=LEFT x2=W - RIGHT y1=y y2=y />
                    <text class="tick" x=LEFT - 6.0 y=y + 4.0 text-anchor="end">
                        {format::tick(t)}
                    </text>
                }
            })
            .collect_view();
        let x_ticks = ticks(x0, x1, 6, true)
            .into_iter()
            .map(|t| {
                let x = sx(t);
                view! {
                    <line class="axis" x1=x x2=x y1=H - BOTTOM y2=H - BOTTOM + 4.0 />
                    <text class="tick" x=x y=H - BOTTOM + 16.0 text-anchor="middle">
                        {format::tick(t)}
                    </text>
                }
            })
            .collect_view();
        let lines = data
            .iter()
            .map(|s| {
                let pts = s
                    .points
                    .iter()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y.clamp(y0, y1))))
                    .collect::<Vec<_>>()
                    .join(" ");
                let dot = s.points.len() < 3;
                let dots = if dot {
                    s.points
                        .iter()
                        .map(|&(x, y)| {
                            view! { <circle cx=sx(x) cy=sy(y) r=3 fill=s.colour /> }
                        })
                        .collect_view()
                        .into_any()
                } else {
                    ().into_any()
                };
                view! {
                    <polyline class="line" points=pts stroke=s.colour />
                    {dots}
                }
            })
            .collect_view();
        let cursor = move || {
            let f = hover.get()?;
            let x = x0 + f * (x1 - x0);
            let readings = series.with(|all| {
                all.iter()
                    .filter_map(|s| {
                        let p = s
                            .points
                            .iter()
                            .min_by(|a, b| (a.0 - x).abs().total_cmp(&(b.0 - x).abs()))?;
                        Some((s.name.clone(), *p))
                    })
                    .collect::<Vec<_>>()
            });
            let px = readings.first().map(|(_, p)| sx(p.0)).unwrap_or(sx(x));
            let label = readings
                .iter()
                .map(|(n, p)| format!("{n} {}", format::tick(p.1)))
                .collect::<Vec<_>>()
                .join(" · ");
            let step = readings.first().map(|(_, p)| p.0).unwrap_or(x);
            let anchor = if px > W * 0.6 { "end" } else { "start" };
            let tx = if px > W * 0.6 { px - 6.0 } else { px + 6.0 };
            Some(view! {
                <line class="cursor" x1=px x2=px y1=TOP y2=H - BOTTOM />
                <text class="readout" x=tx y=TOP + 10.0 text-anchor=anchor>
                    {format!("{x_label} {}: {label}", format::tick(step))}
                </text>
            })
        };
        view! {
            <svg
                class="chart"
                viewBox=format!("0 0 {W} {H}")
                role="img"
                aria-label=title
                on:mousemove=on_move
                on:mouseleave=move |_| hover.set(None)
            >
                {y_ticks}
                <line class="axis" x1=LEFT x2=W - RIGHT y1=H - BOTTOM y2=H - BOTTOM />
                <line class="axis" x1=LEFT x2=LEFT y1=TOP y2=H - BOTTOM />
                {x_ticks}
                <text class="axis-label" x=(LEFT + W - RIGHT) / 2.0 y=H - 4.0 text-anchor="middle">
                    {x_label}
                </text>
                {lines}
                {cursor}
            </svg>
        }
        .into_any()
    };
    let legend = move || {
        series
            .get()
            .into_iter()
            .map(|s| {
                let last = s
                    .points
                    .last()
                    .map(|p| format::tick(p.1))
                    .unwrap_or_else(|| "—".into());
                view! {
                    <span class="legend-item">
                        <span class="swatch" style=format!("background:{}", s.colour)></span>
                        {s.name}
                        " "
                        <b>{last}</b>
                    </span>
                }
            })
            .collect_view()
    };
    view! {
        <figure class="chart-box">
            <figcaption>
                <span class="chart-title">{title}</span>
                <span class="unit">{unit}</span>
                <span class="legend">{legend}</span>
            </figcaption>
            {plot}
        </figure>
    }
}
