//! A study's chart: dev score (mean, with ± one standard deviation over seeds) against one
//! cost axis, the Pareto frontier drawn through its points, the baselines as reference lines.
//! Built as SVG text, so the page shows and downloads the same picture.

use lightpeft_api::rest::{StudyAxis, StudyConfiguration, StudyReport, StudyRole};

use crate::format;
use crate::widgets::chart::ticks;

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 44.0;

/// The axis's title with its unit.
pub fn axis_title(axis: StudyAxis) -> &'static str {
    match axis {
        StudyAxis::EncoderParams => "encoder parameters kept (M)",
        StudyAxis::TrainSpeedup => "stage-2 step speed-up over the all-targets baseline (×)",
        StudyAxis::InferenceSpeedup => "inference speed-up over the all-targets baseline (×)",
        StudyAxis::PeakMemory => "peak memory while training (MiB)",
    }
}

/// The configuration's value on `axis`, in the axis's unit.
pub fn cost(c: &StudyConfiguration, axis: StudyAxis) -> Option<f64> {
    match axis {
        StudyAxis::EncoderParams => c.encoder_params.map(|p| p / 1e6),
        StudyAxis::TrainSpeedup => c.train_speedup,
        StudyAxis::InferenceSpeedup => c.inference_speedup,
        StudyAxis::PeakMemory => c.peak_rss_mib,
    }
}

/// The role's colour and legend name.
pub fn role_style(role: StudyRole) -> (&'static str, &'static str) {
    match role {
        StudyRole::LightPeft => ("#2563eb", "Light-PEFT"),
        StudyRole::Random => ("#d97706", "random pruning"),
        StudyRole::BaselineQueryValue => ("#6b7280", "vanilla, query,value"),
        StudyRole::BaselineAllTargets => ("#111827", "vanilla, all targets"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart as a standalone SVG document; `link` gives the page a point opens.
pub fn svg(
    report: &StudyReport,
    axis: StudyAxis,
    link: &dyn Fn(&StudyConfiguration) -> Option<String>,
) -> String {
    let metric = report.metric.clone().unwrap_or_else(|| "score".into());
    let correlation = format::is_correlation(&metric);
    let scale = if correlation { 1.0 } else { 100.0 };
    let points: Vec<(&StudyConfiguration, f64, f64, f64)> = report
        .configurations
        .iter()
        .filter_map(|c| {
            let x = cost(c, axis)?;
            let y = c.score_mean? * scale;
            Some((c, x, y, c.score_std.unwrap_or(0.0) * scale))
        })
        .collect();
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="11" class="pareto" role="img">"#
    );
    out.push_str(&format!(
        r#"<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>"#
    ));
    if points.is_empty() {
        out.push_str(&format!(
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#6b7280">no finished run yet: points appear as each configuration's runs finish</text></svg>"##,
            W / 2.0,
            H / 2.0
        ));
        return out;
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(_, x, y, s) in &points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y - s);
        y1 = y1.max(y + s);
    }
    let pad = |lo: f64, hi: f64| {
        let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
        (lo - span * 0.08, hi + span * 0.08)
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| TOP + (y1 - y) / (y1 - y0) * (H - TOP - BOTTOM);
    // Axes and ticks.
    let (left, right, top, bottom) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    out.push_str(&format!(
        r##"<path d="M{left},{top}V{bottom}H{right}" stroke="#9ca3af" fill="none"/>"##
    ));
    for t in ticks(x0, x1, 6, false) {
        let x = px(t);
        out.push_str(&format!(
            r##"<line x1="{x}" x2="{x}" y1="{bottom}" y2="{}" stroke="#9ca3af"/><text x="{x}" y="{}" text-anchor="middle" fill="#374151">{}</text>"##,
            bottom + 4.0,
            bottom + 16.0,
            format::tick(t)
        ));
    }
    for t in ticks(y0, y1, 6, false) {
        let y = py(t);
        out.push_str(&format!(
            r##"<line x1="{}" x2="{left}" y1="{y}" y2="{y}" stroke="#9ca3af"/><line x1="{left}" x2="{right}" y1="{y}" y2="{y}" stroke="#f3f4f6"/><text x="{}" y="{}" text-anchor="end" fill="#374151">{}</text>"##,
            left - 4.0,
            left - 6.0,
            y + 4.0,
            format::tick(t)
        ));
    }
    out.push_str(&format!(
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#111827">{}</text>"##,
        (left + right) / 2.0,
        H - 8.0,
        escape(axis_title(axis))
    ));
    let unit = if correlation { "" } else { " (%)" };
    out.push_str(&format!(
        r##"<text transform="translate(14,{}) rotate(-90)" text-anchor="middle" fill="#111827">dev {}{unit}, mean ± std over seeds</text>"##,
        (top + bottom) / 2.0,
        escape(&metric)
    ));
    // Baselines as horizontal reference lines.
    for &(c, _, y, _) in &points {
        if matches!(
            c.role,
            StudyRole::BaselineQueryValue | StudyRole::BaselineAllTargets
        ) {
            let (colour, _) = role_style(c.role);
            out.push_str(&format!(
                r##"<line x1="{left}" x2="{right}" y1="{0}" y2="{0}" stroke="{colour}" stroke-dasharray="4 3" opacity="0.6"/>"##,
                py(y)
            ));
        }
    }
    // The frontier, in cost order.
    let mut frontier: Vec<(f64, f64)> = points
        .iter()
        .filter(|(c, ..)| c.frontier.contains(&axis))
        .map(|&(_, x, y, _)| (px(x), py(y)))
        .collect();
    frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
    if frontier.len() > 1 {
        let d: Vec<String> = frontier
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        out.push_str(&format!(
            r##"<polyline points="{}" fill="none" stroke="#16a34a" stroke-width="1.5" class="frontier"/>"##,
            d.join(" ")
        ));
    }
    // Points with their error bars; each opens its run.
    for &(c, x, y, s) in &points {
        let (colour, _) = role_style(c.role);
        let (cx, cy) = (px(x), py(y));
        let ring = if c.frontier.contains(&axis) {
            r##" stroke="#16a34a" stroke-width="2""##
        } else {
            ""
        };
        let tip = format!(
            "{}: {} ± {} over {} seed(s), {} {}",
            c.label,
            format::tick(y),
            format::tick(s),
            c.finished,
            format::tick(x),
            axis_title(axis)
        );
        let mark = format!(
            r##"<g class="point" data-label="{label}"><title>{tip}</title><line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="{colour}"/><circle cx="{cx:.1}" cy="{cy:.1}" r="5" fill="{colour}"{ring}/></g>"##,
            py(y - s),
            py(y + s),
            label = escape(&c.label),
            tip = escape(&tip),
        );
        match link(c) {
            Some(href) => out.push_str(&format!(r#"<a href="{}">{mark}</a>"#, escape(&href))),
            None => out.push_str(&mark),
        }
    }
    // Legend.
    let roles = [
        StudyRole::LightPeft,
        StudyRole::Random,
        StudyRole::BaselineQueryValue,
        StudyRole::BaselineAllTargets,
    ];
    let mut row = 0.0;
    for role in roles {
        if !points.iter().any(|(c, ..)| c.role == role) {
            continue;
        }
        let (colour, name) = role_style(role);
        let y = TOP + 10.0 + row * 18.0;
        out.push_str(&format!(
            r##"<circle cx="{}" cy="{y}" r="5" fill="{colour}"/><text x="{}" y="{}" fill="#111827">{name}</text>"##,
            right + 18.0,
            right + 28.0,
            y + 4.0
        ));
        row += 1.0;
    }
    let y = TOP + 10.0 + row * 18.0;
    out.push_str(&format!(
        r##"<line x1="{}" x2="{}" y1="{y}" y2="{y}" stroke="#16a34a" stroke-width="1.5"/><text x="{}" y="{}" fill="#111827">Pareto frontier</text>"##,
        right + 12.0,
        right + 24.0,
        right + 28.0,
        y + 4.0
    ));
    out.push_str("</svg>");
    out
}

/// Saves `svg` as a PNG file named `name`, drawn at twice its size through a canvas (the
/// browser rasterises the same picture the page shows).
pub fn save_png(svg: &str, name: String) -> Result<(), String> {
    use wasm_bindgen::{JsCast, closure::Closure};
    let document = leptos::prelude::document();
    let image = web_sys::HtmlImageElement::new().map_err(|e| format!("{e:?}"))?;
    let source = format!(
        "data:image/svg+xml;charset=utf-8,{}",
        String::from(js_sys::encode_uri_component(svg))
    );
    let drawn = image.clone();
    let onload = Closure::once(move || {
        let canvas: web_sys::HtmlCanvasElement = match document
            .create_element("canvas")
            .ok()
            .and_then(|c| c.dyn_into().ok())
        {
            Some(c) => c,
            None => return,
        };
        canvas.set_width((W * 2.0) as u32);
        canvas.set_height((H * 2.0) as u32);
        let Some(context) = canvas
            .get_context("2d")
            .ok()
            .flatten()
            .and_then(|c| c.dyn_into::<web_sys::CanvasRenderingContext2d>().ok())
        else {
            return;
        };
        if context
            .draw_image_with_html_image_element_and_dw_and_dh(&drawn, 0.0, 0.0, W * 2.0, H * 2.0)
            .is_err()
        {
            return;
        }
        let Ok(url) = canvas.to_data_url_with_type("image/png") else {
            return;
        };
        if let Some(link) = document
            .create_element("a")
            .ok()
            .and_then(|a| a.dyn_into::<web_sys::HtmlAnchorElement>().ok())
        {
            link.set_href(&url);
            link.set_download(&name);
            link.click();
        }
    });
    image.set_onload(Some(onload.as_ref().unchecked_ref()));
    // The image keeps the callback until it fires once.
    onload.forget();
    image.set_src(&source);
    Ok(())
}
