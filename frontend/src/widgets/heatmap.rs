//! Heatmaps as inline SVG: one rect per cell on a viridis scale with its legend, cells a plan
//! would remove hatched in proportion, and a readout of the cell under the pointer.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::format;

const WIDE: f64 = 840.0;
const MAX_CELL: f64 = 56.0;
const RIGHT: f64 = 6.0;
const TOP: f64 = 4.0;
const AXIS: f64 = 26.0;

/// What a heatmap shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Row labels (top to bottom).
    pub rows: Vec<String>,
    /// Column labels (left to right), shared by every row.
    pub columns: Vec<String>,
    /// `values[row][column]`; NaN draws an empty cell.
    pub values: Vec<Vec<f64>>,
    /// Value at the scale's low end.
    pub min: f64,
    /// Value at the scale's high end.
    pub max: f64,
    /// Fraction of each cell a plan would remove.
    pub removed: Option<Vec<Vec<f64>>>,
}

const VIRIDIS: [(f64, [f64; 3]); 5] = [
    (0.0, [68.0, 1.0, 84.0]),
    (0.25, [59.0, 82.0, 139.0]),
    (0.5, [33.0, 145.0, 140.0]),
    (0.75, [94.0, 201.0, 98.0]),
    (1.0, [253.0, 231.0, 37.0]),
];

/// The colour of `t` in [0, 1] on the viridis scale.
pub fn colour(t: f64) -> String {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let i = VIRIDIS
        .iter()
        .position(|(s, _)| *s >= t)
        .unwrap_or(4)
        .max(1);
    let (s0, c0) = VIRIDIS[i - 1];
    let (s1, c1) = VIRIDIS[i];
    let f = (t - s0) / (s1 - s0);
    let mix = |k: usize| (c0[k] + (c1[k] - c0[k]) * f).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(0), mix(1), mix(2))
}

/// Cell width and total width: a small grid keeps readable cells instead of stretching.
fn layout(cols: usize, left: f64) -> (f64, f64) {
    let cw = ((WIDE - left - RIGHT) / cols.max(1) as f64).min(MAX_CELL);
    (cw, left + cw * cols.max(1) as f64 + RIGHT)
}

fn scaled(v: f64, min: f64, max: f64) -> f64 {
    if max > min {
        (v - min) / (max - min)
    } else {
        0.5
    }
}

/// The legend: the colour ramp from `min` to `max`, and the hatch of removed cells.
#[component]
pub fn Legend(
    /// Pattern id of the hatch.
    id: &'static str,
    /// What the colour means, with its unit.
    label: &'static str,
    /// Scale ends.
    #[prop(into)]
    range: Signal<(f64, f64)>,
    /// Whether to show the "removed" swatch.
    #[prop(into)]
    with_cut: Signal<bool>,
) -> impl IntoView {
    let gradient = (0..=10)
        .map(|i| colour(i as f64 / 10.0))
        .collect::<Vec<_>>()
        .join(",");
    view! {
        <div class="legend-bar">
            <span class="legend-label">{label}</span>
            <span class="tick">{move || format::tick(range.get().0)}</span>
            <span class="ramp" style=format!("background:linear-gradient(to right,{gradient})")></span>
            <span class="tick">{move || format::tick(range.get().1)}</span>
            <Show when=move || with_cut.get()>
                <svg class="swatch-cut" viewBox="0 0 14 14" aria-hidden="true">
                    <rect width="14" height="14" fill=colour(0.5) />
                    <rect width="14" height="14" fill=format!("url(#hatch-{id})") />
                </svg>
                <span>"would be removed (hatched in proportion)"</span>
            </Show>
        </div>
    }
}

/// A heatmap of `grid`.
#[component]
pub fn HeatmapView(
    /// Unique id (patterns, tests).
    id: &'static str,
    /// The data.
    #[prop(into)]
    grid: Signal<Option<Grid>>,
    /// Row height in SVG units.
    #[prop(default = 22.0)]
    row_h: f64,
    /// Width of the row labels.
    #[prop(default = 56.0)]
    left: f64,
    /// What a value is, for the readout.
    value_label: &'static str,
    /// Shown while there is no data.
    #[prop(default = "no snapshot yet")]
    empty: &'static str,
) -> impl IntoView {
    let hover = RwSignal::new(None::<(usize, usize)>);
    let on_move = move |ev: web_sys::MouseEvent| {
        let Some(el) = ev
            .current_target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let rect = el.get_bounding_client_rect();
        let Some((rows, cols)) =
            grid.with_untracked(|g| g.as_ref().map(|g| (g.rows.len(), g.columns.len().max(1))))
        else {
            return;
        };
        let h = TOP + rows as f64 * row_h + AXIS;
        let (cw, w) = layout(cols, left);
        let fx = (ev.client_x() as f64 - rect.left()) / rect.width() * w;
        let fy = (ev.client_y() as f64 - rect.top()) / rect.height() * h;
        let (c, r) = ((fx - left) / cw, (fy - TOP) / row_h);
        if c >= 0.0 && r >= 0.0 && (c as usize) < cols && (r as usize) < rows {
            hover.set(Some((r as usize, c as usize)));
        } else {
            hover.set(None);
        }
    };
    // Arrow keys move the read-out cell, so the values are reachable without a mouse.
    let on_key = move |ev: web_sys::KeyboardEvent| {
        let Some((rows, cols)) =
            grid.with_untracked(|g| g.as_ref().map(|g| (g.rows.len(), g.columns.len())))
        else {
            return;
        };
        if rows == 0 || cols == 0 {
            return;
        }
        let (r, c) = hover.get_untracked().unwrap_or((0, 0));
        let next = match ev.key().as_str() {
            "ArrowLeft" => (r, c.saturating_sub(1)),
            "ArrowRight" => (r, (c + 1).min(cols - 1)),
            "ArrowUp" => (r.saturating_sub(1), c),
            "ArrowDown" => ((r + 1).min(rows - 1), c),
            "Home" => (r, 0),
            "End" => (r, cols - 1),
            _ => return,
        };
        ev.prevent_default();
        hover.set(Some(next));
    };
    let marker = move || {
        let (r, c) = hover.get()?;
        let cols = grid.with(|g| g.as_ref().map(|g| g.columns.len().max(1)))?;
        let (cw, _) = layout(cols, left);
        Some(view! {
            <rect
                class="focus-cell"
                x=left + c as f64 * cw
                y=TOP + r as f64 * row_h
                width=cw.max(2.0)
                height=row_h - 1.0
            />
        })
    };
    let body = move || {
        let Some(g) = grid.get() else {
            return view! { <p class="chart-empty">{empty}</p> }.into_any();
        };
        let rows = g.rows.len();
        let cols = g.columns.len().max(1);
        let h = TOP + rows as f64 * row_h + AXIS;
        let (cw, w) = layout(cols, left);
        let mut cells = Vec::with_capacity(rows * cols);
        let mut cuts = Vec::new();
        for (r, row) in g.values.iter().enumerate() {
            let y = TOP + r as f64 * row_h;
            for (c, v) in row.iter().enumerate() {
                let x = left + c as f64 * cw;
                let fill = if v.is_finite() {
                    colour(scaled(*v, g.min, g.max))
                } else {
                    "#eee".into()
                };
                cells.push(view! {
                    <rect class="cell" x=x y=y width=cw + 0.02 height=row_h - 1.0 fill=fill />
                });
                let cut = g
                    .removed
                    .as_ref()
                    .and_then(|m| m.get(r))
                    .and_then(|m| m.get(c))
                    .copied()
                    .unwrap_or(0.0);
                if cut > 0.0 {
                    cuts.push(view! {
                        <rect
                            class="cut"
                            x=x
                            y=y
                            width=cw + 0.02
                            height=row_h - 1.0
                            fill=format!("url(#hatch-{id})")
                            opacity=cut.clamp(0.15, 1.0)
                        />
                    });
                }
            }
        }
        let removed_cells = cuts.len();
        let row_labels = g
            .rows
            .iter()
            .enumerate()
            .map(|(r, label)| {
                view! {
                    <text class="tick" x=left - 6.0 y=TOP + r as f64 * row_h + row_h * 0.65 text-anchor="end">
                        {label.clone()}
                    </text>
                }
            })
            .collect_view();
        // As many column labels as fit without overlapping.
        let longest = g
            .columns
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(1);
        let every = ((longest as f64 * 6.0 + 8.0) / cw).ceil().max(1.0) as usize;
        let col_labels = g
            .columns
            .iter()
            .enumerate()
            .filter(|(c, _)| c.is_multiple_of(every))
            .map(|(c, label)| {
                view! {
                    <text
                        class="tick"
                        x=left + (c as f64 + 0.5) * cw
                        y=TOP + rows as f64 * row_h + 14.0
                        text-anchor="middle"
                    >
                        {label.clone()}
                    </text>
                }
            })
            .collect_view();
        view! {
            <svg
                class="heatmap"
                id=format!("heatmap-{id}")
                data-cells=rows * cols
                data-removed=removed_cells
                viewBox=format!("0 0 {w} {h}")
                style=format!("max-width:{w}px")
                role="img"
                aria-label=format!("{id} heatmap, {rows} rows by {cols} columns")
                shape-rendering="crispEdges"
                tabindex="0"
                on:mousemove=on_move
                on:mouseleave=move |_| hover.set(None)
                on:keydown=on_key
                on:blur=move |_| hover.set(None)
            >
                <defs>
                    <pattern id=format!("hatch-{id}") width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
                        <rect width="6" height="6" fill="rgba(255,255,255,0.25)" />
                        <line x1="0" y1="0" x2="0" y2="6" stroke="#d7263d" stroke-width="2" />
                    </pattern>
                </defs>
                {row_labels}
                {cells}
                {cuts}
                {col_labels}
                {marker}
            </svg>
        }
        .into_any()
    };
    let readout = move || {
        let (r, c) = hover.get()?;
        grid.with(|g| {
            let g = g.as_ref()?;
            let v = *g.values.get(r)?.get(c)?;
            let cut = g
                .removed
                .as_ref()
                .and_then(|m| m.get(r)?.get(c).copied())
                .filter(|f| *f > 0.0)
                .map(|f| format!(" · {} would be removed", format::pct(f)))
                .unwrap_or_default();
            Some(format!(
                "{} · {}: {value_label} {}{cut}",
                g.rows.get(r)?,
                g.columns.get(c)?,
                if v.is_finite() {
                    format::tick(v)
                } else {
                    "—".into()
                }
            ))
        })
    };
    view! {
        <div class="heatmap-box">
            {body}
            <p class="readout-line" aria-live="polite">
                {move || readout().unwrap_or_else(|| "point at a cell (or focus the map and use the arrow keys) to read it".into())}
            </p>
        </div>
    }
}
