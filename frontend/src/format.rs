//! Numbers as people read them, always with their unit.

/// `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A parameter count: `22.71 M params`, `8,192 params`.
pub fn params(n: usize) -> String {
    format!("{} params", count(n))
}

/// A count without unit: `22.71 M`, `8,192`.
pub fn count(n: usize) -> String {
    match n {
        0..100_000 => thousands(n as u64),
        100_000..1_000_000_000 => format!("{:.2} M", n as f64 / 1e6),
        _ => format!("{:.2} G", n as f64 / 1e9),
    }
}

/// A fraction as a percentage: `85.3 %`.
pub fn pct(f: f64) -> String {
    format!("{:.1} %", f * 100.0)
}

pub use lightpeft_api::rest::is_correlation;

/// A score in its own unit: a correlation as `0.873`, anything else as a percentage.
pub fn score(metric: &str, value: f64) -> String {
    if is_correlation(metric) {
        format!("{value:.3}")
    } else {
        pct(value)
    }
}

/// A signed difference of scores in the score's unit: `+0.012` or `+1.2 pp`.
pub fn score_delta(metric: &str, delta: f64) -> String {
    if is_correlation(metric) {
        format!("{delta:+.3}")
    } else {
        pp(delta)
    }
}

/// A signed difference of fractions in percentage points: `+1.2 pp`.
pub fn pp(delta: f64) -> String {
    format!("{:+.1} pp", delta * 100.0)
}

/// Seconds as milliseconds or seconds: `840 ms`, `1.64 s`.
pub fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 100.0 {
        format!("{s:.2} s")
    } else {
        duration(s)
    }
}

/// Milliseconds: `840 ms`.
pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{} ms", thousands(v.round() as u64))
    }
}

/// A rough duration: `45 s`, `3 min 20 s`, `1 h 05 min`.
pub fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// MiB: `1,284 MiB`.
pub fn mib(v: f64) -> String {
    format!("{} MiB", thousands(v.round() as u64))
}

/// Bytes in a readable unit.
pub fn bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}

/// A factor: `1.52×`.
pub fn times(f: f64) -> String {
    format!("{f:.2}×")
}

/// A value on a chart axis, short.
pub fn tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .into()
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .into()
    }
}

/// An RFC 3339 timestamp as `2026-11-27 17:30`.
pub fn when(ts: &str) -> String {
    ts.get(..16).unwrap_or(ts).replace('T', " ")
}
