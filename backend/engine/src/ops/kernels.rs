//! The element-wise and row-wise loops of the fused ops, each compiled twice: once with AVX2 and
//! FMA enabled, taken at run time where the CPU has them, and once for the baseline target.
//!
//! The crate is built for baseline x86-64 (SSE2): four lanes at best, and no fused multiply-add
//! for the polynomials of exp and erf. The loops here are written for LLVM's vectorisers (no
//! bounds checks, no branch per element, reductions over [`LANES`] independent accumulators),
//! so the same body compiled with `avx2,fma` runs eight lanes wide. Both compilations add and
//! reduce in the same order; they differ only in where a multiply-add rounds once ([`madd`]).

/// Independent accumulators per reduction: one AVX2 register of f32, two SSE ones.
const LANES: usize = 8;

/// Whether this CPU has AVX2 and FMA, detected once.
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DETECTED.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Defines `pub(crate) fn $name` that runs `$name::avx2_fma` where the CPU allows and
/// `$name::portable` otherwise, both instances of the one `#[inline(always)]` body (generic over
/// a `const $fma: bool` that says whether multiply-adds may fuse), so that the body and the
/// helpers it inlines are compiled under each instance's target features.
macro_rules! kernel {
    (
        $(#[$doc:meta])*
        fn $name:ident<$fma:ident>($($arg:ident: $ty:ty),* $(,)?) $body:block
    ) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: `avx2_fma` needs only the AVX2 and FMA features, which this CPU has.
                return unsafe { $name::avx2_fma($($arg),*) };
            }
            $name::portable($($arg),*)
        }

        #[doc = concat!("The two compilations of [`", stringify!($name), "`].")]
        pub(crate) mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[inline(always)]
            fn body<const $fma: bool>($($arg: $ty),*) $body

            /// For any CPU of the target.
            pub(crate) fn portable($($arg: $ty),*) {
                body::<false>($($arg),*)
            }

            /// For CPUs with AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            pub(crate) fn avx2_fma($($arg: $ty),*) {
                body::<true>($($arg),*)
            }
        }
    };
}

kernel! {
    /// Softmax in place of each `mask.len()`-long row of `rows` plus the additive `mask`: the
    /// same steps as candle's (subtract the maximum, exponentiate, normalise).
    fn softmax_rows<FMA>(rows: &mut [f32], mask: &[f32]) {
        assert!(!mask.is_empty() && rows.len().is_multiple_of(mask.len()), "softmax: ragged rows");
        for row in rows.chunks_exact_mut(mask.len()) {
            let max = add_and_max(row, mask);
            normalise_exp::<FMA>(row, max);
        }
    }
}

kernel! {
    /// `out = softmax(scores · scale + mask)` for one row.
    fn scaled_softmax_row<FMA>(out: &mut [f32], scores: &[f32], mask: &[f32], scale: f32) {
        assert!(out.len() == scores.len() && out.len() == mask.len(), "softmax: lengths differ");
        for ((o, &s), &m) in out.iter_mut().zip(scores).zip(mask) {
            *o = madd::<FMA>(s, scale, m);
        }
        let max = max_of(out);
        normalise_exp::<FMA>(out, max);
    }
}

kernel! {
    /// Softmax's backward in place for each `len`-long row of probabilities `probs`, with the
    /// output gradient arriving in `grad`: `grad ⟵ scale · p · (grad − Σ grad·p)`.
    fn softmax_grad_rows<FMA>(grad: &mut [f32], probs: &[f32], len: usize, scale: f32) {
        assert!(len > 0 && grad.len() == probs.len(), "softmax gradient: lengths differ");
        for (g, p) in grad.chunks_exact_mut(len).zip(probs.chunks_exact(len)) {
            let dot = dot::<FMA>(g, p);
            for (g, &p) in g.iter_mut().zip(p) {
                *g = scale * p * (*g - dot);
            }
        }
    }
}

kernel! {
    /// Softmax's backward for one row: `out = scale · p · (grad − Σ grad·p)`.
    fn softmax_grad_row<FMA>(out: &mut [f32], probs: &[f32], grad: &[f32], scale: f32) {
        assert!(
            out.len() == probs.len() && out.len() == grad.len(),
            "softmax gradient: lengths differ"
        );
        let dot = dot::<FMA>(grad, probs);
        for ((o, &p), &g) in out.iter_mut().zip(probs).zip(grad) {
            *o = scale * p * (g - dot);
        }
    }
}

kernel! {
    /// `out = a ⊙ b` (dropout factors applied to probabilities).
    fn product<FMA>(out: &mut [f32], a: &[f32], b: &[f32]) {
        assert!(out.len() == a.len() && out.len() == b.len(), "product: lengths differ");
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = a * b;
        }
    }
}

kernel! {
    /// `x ⟵ x ⊙ factors`.
    fn scale_by<FMA>(x: &mut [f32], factors: &[f32]) {
        assert!(x.len() == factors.len(), "scale: lengths differ");
        for (x, &f) in x.iter_mut().zip(factors) {
            *x *= f;
        }
    }
}

kernel! {
    /// `out = x ⊙ scale` where `scale[j]` multiplies the `width` columns of group `j` in every
    /// `scale.len() · width`-long row (a head's context columns, or one FFN neuron).
    fn group_scale_rows<FMA>(out: &mut [f32], x: &[f32], scale: &[f32], width: usize) {
        let row = scale.len() * width;
        assert!(row > 0 && out.len() == x.len() && x.len().is_multiple_of(row), "group scale: ragged rows");
        for (out, x) in out.chunks_exact_mut(row).zip(x.chunks_exact(row)) {
            if width == 1 {
                for ((o, &x), &s) in out.iter_mut().zip(x).zip(scale) {
                    *o = x * s;
                }
                continue;
            }
            for ((out, x), &s) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)).zip(scale) {
                for (o, &x) in out.iter_mut().zip(x) {
                    *o = x * s;
                }
            }
        }
    }
}

kernel! {
    /// The gradients of [`group_scale_rows`]: `dx = grad ⊙ scale`, and `d_scale[j] += Σ grad·x`
    /// over group `j`'s columns of every row.
    fn group_scale_grad_rows<FMA>(
        dx: &mut [f32],
        d_scale: &mut [f32],
        x: &[f32],
        grad: &[f32],
        scale: &[f32],
        width: usize,
    ) {
        let row = scale.len() * width;
        assert!(
            row > 0 && d_scale.len() == scale.len() && dx.len() == x.len() && grad.len() == x.len()
                && x.len().is_multiple_of(row),
            "group scale grad: ragged rows"
        );
        for ((dx, x), grad) in dx.chunks_exact_mut(row).zip(x.chunks_exact(row)).zip(grad.chunks_exact(row)) {
            if width == 1 {
                for ((((dx, &x), &g), &s), ds) in
                    dx.iter_mut().zip(x).zip(grad).zip(scale).zip(d_scale.iter_mut())
                {
                    *dx = g * s;
                    *ds = madd::<FMA>(g, x, *ds);
                }
                continue;
            }
            let groups = dx.chunks_exact_mut(width).zip(x.chunks_exact(width)).zip(grad.chunks_exact(width));
            for (((dx, x), grad), (&s, ds)) in groups.zip(scale.iter().zip(d_scale.iter_mut())) {
                for (dx, &g) in dx.iter_mut().zip(grad) {
                    *dx = g * s;
                }
                *ds += dot::<FMA>(grad, x);
            }
        }
    }
}

kernel! {
    /// LayerNorm of each `gamma.len()`-long row of `x` into `y`: `(x − mean)/√(var + eps)·gamma
    /// + beta`.
    fn layer_norm_rows<FMA>(y: &mut [f32], x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let d = gamma.len();
        assert!(d > 0 && beta.len() == d && y.len() == x.len(), "layer norm: lengths differ");
        for (y, x) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let (mean, rstd) = moments::<FMA>(x, eps);
            for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                *y = madd::<FMA>((x - mean) * rstd, g, b);
            }
        }
    }
}

kernel! {
    /// LayerNorm in place of each `gamma.len()`-long row of `y + residual`: the same sums and
    /// the same steps as adding them and then [`layer_norm_rows`].
    fn add_layer_norm_in_place<FMA>(y: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let d = gamma.len();
        assert!(d > 0 && beta.len() == d && y.len() == residual.len(), "layer norm: lengths differ");
        for (y, r) in y.chunks_exact_mut(d).zip(residual.chunks_exact(d)) {
            for (y, &r) in y.iter_mut().zip(r) {
                *y += r;
            }
            let (mean, rstd) = moments::<FMA>(y, eps);
            for ((y, &g), &b) in y.iter_mut().zip(gamma).zip(beta) {
                *y = madd::<FMA>((*y - mean) * rstd, g, b);
            }
        }
    }
}

kernel! {
    /// LayerNorm's input gradient for each `gamma.len()`-long row of `x` and of the output
    /// gradient `grad`, recomputing the row's statistics.
    fn layer_norm_grad_rows<FMA>(dx: &mut [f32], x: &[f32], grad: &[f32], gamma: &[f32], eps: f32) {
        let d = gamma.len();
        assert!(
            d > 0 && dx.len() == x.len() && grad.len() == x.len(),
            "layer norm gradient: lengths differ"
        );
        let rows = x.chunks_exact(d).zip(grad.chunks_exact(d));
        for ((x, g), dx) in rows.zip(dx.chunks_exact_mut(d)) {
            let (mean, rstd) = moments::<FMA>(x, eps);
            // With x̂ = (x − mean)·rstd and ĝ = g·gamma, the gradient of x is
            // rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂)); the two means are summed in f64.
            let (mut sum_g, mut sum_gx) = ([0.0f64; LANES], [0.0f64; LANES]);
            let (x_chunks, x_tail) = x.as_chunks::<LANES>();
            let (g_chunks, g_tail) = g.as_chunks::<LANES>();
            let (w_chunks, w_tail) = gamma.as_chunks::<LANES>();
            for ((x, g), w) in x_chunks.iter().zip(g_chunks).zip(w_chunks) {
                for i in 0..LANES {
                    let g_hat = g[i] * w[i];
                    sum_g[i] += g_hat as f64;
                    sum_gx[i] += (g_hat * ((x[i] - mean) * rstd)) as f64;
                }
            }
            let (mut sum_g, mut sum_gx) = (sum_lanes_f64(sum_g), sum_lanes_f64(sum_gx));
            for ((&x, &g), &w) in x_tail.iter().zip(g_tail).zip(w_tail) {
                let g_hat = g * w;
                sum_g += g_hat as f64;
                sum_gx += (g_hat * ((x - mean) * rstd)) as f64;
            }
            let mean_g = (sum_g / d as f64) as f32;
            let mean_gx = (sum_gx / d as f64) as f32;
            for (((dx, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(gamma) {
                // Not fused: `mean_g` averages the rounded products, so the product it is
                // subtracted from must be rounded the same way.
                let centred = g * w - mean_g;
                *dx = rstd * madd::<FMA>(-((x - mean) * rstd), mean_gx, centred);
            }
        }
    }
}

kernel! {
    /// `y = GELU(x)` element by element.
    fn gelu_forward<FMA>(y: &mut [f32], x: &[f32]) {
        assert!(y.len() == x.len(), "gelu: lengths differ");
        for (y, &x) in y.iter_mut().zip(x) {
            *y = gelu::<FMA>(x);
        }
    }
}

kernel! {
    /// `y = GELU(y)` element by element: [`gelu_forward`] where nothing needs the input after.
    fn gelu_in_place<FMA>(y: &mut [f32]) {
        for y in y.iter_mut() {
            *y = gelu::<FMA>(*y);
        }
    }
}

kernel! {
    /// `norms[i] = ‖row i‖₂` for the `norms.len()` equal rows of `rows`, summed in lanes.
    fn row_norms<FMA>(norms: &mut [f32], rows: &[f32]) {
        let d = rows.len() / norms.len().max(1);
        assert!(d * norms.len() == rows.len(), "row norms: rows of unequal length");
        for (n, row) in norms.iter_mut().zip(rows.chunks_exact(d.max(1))) {
            *n = dot::<FMA>(row, row).sqrt();
        }
    }
}

kernel! {
    /// GELU's input gradient `dx = grad · GELU'(x)`, given the forward's output `y`.
    fn gelu_backward<FMA>(dx: &mut [f32], x: &[f32], y: &[f32], grad: &[f32]) {
        assert!(
            dx.len() == x.len() && y.len() == x.len() && grad.len() == x.len(),
            "gelu gradient: lengths differ"
        );
        for (dx, ((&x, &y), &g)) in dx.iter_mut().zip(x.iter().zip(y).zip(grad)) {
            *dx = g * gelu_derivative::<FMA>(x, y);
        }
    }
}

kernel! {
    /// Dropout factors (0 or `keep_scale`) of `out.len() / 2` whole pairs of elements, the
    /// first being pair `first_pair`: one 64-bit draw per pair, its low half for the first
    /// element and its high half for the second.
    fn dropout_pairs<FMA>(
        out: &mut [f32],
        seed: u64,
        first_pair: u64,
        threshold: u32,
        keep_scale: f32,
    ) {
        let (pairs, odd) = out.as_chunks_mut::<2>();
        assert!(odd.is_empty(), "dropout: an odd number of elements");
        // The Weyl sequence by additions: one 64-bit product per pair fewer (AVX2 builds each
        // from three 32-bit ones).
        let mut weyl = weyl_step(seed, first_pair);
        for pair in pairs.iter_mut() {
            let bits = mix64(weyl);
            weyl = weyl.wrapping_add(WEYL_INCREMENT);
            pair[0] = dropout_factor(bits as u32, threshold, keep_scale);
            pair[1] = dropout_factor((bits >> 32) as u32, threshold, keep_scale);
        }
    }
}

/// A dropout factor: `keep_scale` where `draw` is above `threshold`, else 0, chosen by masking
/// bits rather than branching (a coin flip is mispredicted too often for a branch to pay).
#[inline(always)]
pub(super) fn dropout_factor(draw: u32, threshold: u32, keep_scale: f32) -> f32 {
    let keep = ((draw > threshold) as u32).wrapping_neg();
    f32::from_bits(keep_scale.to_bits() & keep)
}

/// SplitMix64's output function applied to a Weyl sequence indexed by `pair_index`: a
/// counter-based generator whose stream is the same however the work is split.
#[inline(always)]
pub(super) fn pair_bits(seed: u64, pair_index: u64) -> u64 {
    mix64(weyl_step(seed, pair_index))
}

/// The Weyl sequence's increment, 2⁶⁴/φ.
const WEYL_INCREMENT: u64 = 0x9e37_79b9_7f4a_7c15;

/// Term `index` of the Weyl sequence from `seed`.
#[inline(always)]
fn weyl_step(seed: u64, index: u64) -> u64 {
    seed.wrapping_add(index.wrapping_mul(WEYL_INCREMENT))
}

/// SplitMix64's output function.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `a·b + c`, rounded once where `FMA` (the AVX2 instance, where it is one instruction) and
/// twice otherwise (a portable `mul_add` would be a libm call per element).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// As [`madd`], in f64.
#[inline(always)]
fn madd_f64<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// The larger of `a` and `b`, as one `max` instruction (unlike `f32::max`, which also sorts out
/// NaNs; a NaN row gives NaN probabilities either way, through the sum).
#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// Adds `mask` to `row` in place and returns the row's maximum.
#[inline(always)]
fn add_and_max(row: &mut [f32], mask: &[f32]) -> f32 {
    let (row_chunks, row_tail) = row.as_chunks_mut::<LANES>();
    let (mask_chunks, mask_tail) = mask.as_chunks::<LANES>();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for (r, m) in row_chunks.iter_mut().zip(mask_chunks) {
        for i in 0..LANES {
            r[i] += m[i];
            lanes[i] = larger(lanes[i], r[i]);
        }
    }
    let mut max = max_lanes(lanes);
    for (r, &m) in row_tail.iter_mut().zip(mask_tail) {
        *r += m;
        max = larger(max, *r);
    }
    max
}

/// The maximum of `x` (−∞ if empty).
#[inline(always)]
fn max_of(x: &[f32]) -> f32 {
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for c in chunks {
        for i in 0..LANES {
            lanes[i] = larger(lanes[i], c[i]);
        }
    }
    tail.iter().fold(max_lanes(lanes), |m, &v| larger(m, v))
}

/// `row ⟵ e^(row − max) / Σ e^(row − max)`.
#[inline(always)]
fn normalise_exp<const FMA: bool>(row: &mut [f32], max: f32) {
    // The exponentials as a plain map, which the loop vectoriser takes whole; summing them in
    // the same loop, lane by lane, leaves it scalar.
    for p in row.iter_mut() {
        *p = exp_nonpositive::<FMA>(*p - max);
    }
    let inv = 1.0 / sum_of(row);
    for p in row.iter_mut() {
        *p *= inv;
    }
}

/// Σ x.
#[inline(always)]
fn sum_of(x: &[f32]) -> f32 {
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut lanes = [0.0f32; LANES];
    for c in chunks {
        for i in 0..LANES {
            lanes[i] += c[i];
        }
    }
    tail.iter().fold(sum_lanes(lanes), |s, &v| s + v)
}

/// Σ a·b.
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    let mut lanes = [0.0f32; LANES];
    for (a, b) in a_chunks.iter().zip(b_chunks) {
        for i in 0..LANES {
            lanes[i] = madd::<FMA>(a[i], b[i], lanes[i]);
        }
    }
    a_tail
        .iter()
        .zip(b_tail)
        .fold(sum_lanes(lanes), |s, (&a, &b)| madd::<FMA>(a, b, s))
}

/// A row's mean and 1/√(var + eps), summed in f64 so that long rows lose no precision.
#[inline(always)]
fn moments<const FMA: bool>(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f64;
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut lanes = [0.0f64; LANES];
    for c in chunks {
        for i in 0..LANES {
            lanes[i] += c[i] as f64;
        }
    }
    let mean = tail.iter().fold(sum_lanes_f64(lanes), |s, &v| s + v as f64) / n;
    let mut lanes = [0.0f64; LANES];
    for c in chunks {
        for i in 0..LANES {
            let d = c[i] as f64 - mean;
            lanes[i] = madd_f64::<FMA>(d, d, lanes[i]);
        }
    }
    let var = tail.iter().fold(sum_lanes_f64(lanes), |s, &v| {
        let d = v as f64 - mean;
        madd_f64::<FMA>(d, d, s)
    }) / n;
    (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
}

/// The lanes' maximum.
#[inline(always)]
fn max_lanes(l: [f32; LANES]) -> f32 {
    let quads = [
        larger(l[0], l[4]),
        larger(l[1], l[5]),
        larger(l[2], l[6]),
        larger(l[3], l[7]),
    ];
    larger(larger(quads[0], quads[2]), larger(quads[1], quads[3]))
}

/// The lanes' sum, as a tree (the order an 8-wide register folds in halves).
#[inline(always)]
fn sum_lanes(l: [f32; LANES]) -> f32 {
    let quads = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (quads[0] + quads[2]) + (quads[1] + quads[3])
}

/// As [`sum_lanes`], in f64.
#[inline(always)]
fn sum_lanes_f64(l: [f64; LANES]) -> f64 {
    let quads = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (quads[0] + quads[2]) + (quads[1] + quads[3])
}

// Scalar maths for the kernels above, without libm calls or branches so that every element
// costs a handful of multiply-adds and vectorises. Coefficients are minimax fits made for this
// file (weighted least squares with Lawson reweighting on a dense grid, then rounded to f32);
// the tests measure their accuracy with multiply-adds both fused and not.

/// x/2 · (1 + erf(x/√2)).
#[inline(always)]
pub(super) fn gelu<const FMA: bool>(x: f32) -> f32 {
    0.5 * x * (1.0 + erf::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// d/dx GELU = Φ(x) + x·φ(x), given `y` = GELU(x) = x·Φ(x) from the forward pass: reading Φ off
/// `y / x` saves evaluating erf a second time. (Only where x is too close to 0 for `y` to keep
/// its digits is Φ taken as its limit, 1/2.)
#[inline(always)]
fn gelu_derivative<const FMA: bool>(x: f32, y: f32) -> f32 {
    // Both sides are computed and one is selected: no branch per element.
    let cdf = if x.abs() < 1e-30 { 0.5 } else { y / x };
    madd::<FMA>(
        x * FRAC_1_SQRT_2PI,
        exp_nonpositive::<FMA>(-0.5 * x * x),
        cdf,
    )
}

/// 1/√(2π), the standard normal density at 0.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// erf(t), within about 1.2e-7 (two f32 ulps of values near 1).
///
/// For |t| ≤ 1, erf(t) = t·P(t²); beyond, erf(|t|) = 1 − e^(−t²)·R(1/(1 + |t|/2)), with R fitted
/// to the scaled complement e^(t²)·erfc(t) on [1, 4]. Past 4, e^(−t²)·R < 2e-8 and erf rounds
/// to ±1. Both formulas are evaluated and one selected, which costs less than a branch that
/// goes either way per element and lets the loop vectorise.
#[inline(always)]
pub(super) fn erf<const FMA: bool>(t: f32) -> f32 {
    let a = t.abs();
    let core = a * horner::<FMA, 6>(a * a, &ERF_CORE);
    let tail_factor = horner::<FMA, 7>(1.0 / (1.0 + 0.5 * a), &ERF_TAIL);
    let tail = madd::<FMA>(-exp_nonpositive::<FMA>(-a * a), tail_factor, 1.0);
    let magnitude = if a <= 1.0 { core } else { tail };
    magnitude.copysign(t)
}

/// erf(t)/t as a polynomial in t² on |t| ≤ 1 (fit error 4e-8 relative).
// The leading coefficient is a fitted value one f32 ulp below 2/√π, not that constant
// misspelt: pinning it to 2/√π raises the worst error from 1.2e-7 to 2.2e-7.
#[allow(clippy::approx_constant)]
const ERF_CORE: [f32; 6] = [
    1.128_379_1,
    -0.376_123_25,
    0.112_801_8,
    -0.026_711_311,
    0.004_917_551,
    -0.000_563_141_95,
];

/// e^(t²)·erfc(t) as a polynomial in 1/(1 + t/2) on 1 ≤ t ≤ 4 (fit error 3e-8 relative).
const ERF_TAIL: [f32; 7] = [
    0.000_536_602_63,
    0.274_512_62,
    0.326_122_55,
    0.114_382_32,
    0.383_577_14,
    -0.040_836_625,
    -0.059_077_855,
];

/// e^x for x ≤ 0 within about two f32 ulps: 2ⁿ·e^r with n = round(x·log₂e), r = x − n·ln2 in
/// two parts (so r keeps its low bits), and e^r = 1 + r + r²·S(r) on |r| ≤ ln2/2. Results
/// below f32's smallest normal (x < −87.3) flush to 0; a NaN stays NaN.
#[inline(always)]
pub(super) fn exp_nonpositive<const FMA: bool>(x: f32) -> f32 {
    debug_assert!(x <= 0.0 || x.is_nan(), "exp_nonpositive({x})");
    const LOWEST: f32 = -87.3;
    // Adding 1.5·2²³ rounds to the nearest integer (x86-64's baseline has no rounding
    // instruction, so `f32::round` would be a libm call), and leaves that integer in the low
    // bits of the sum, where 2ⁿ's exponent bits are read from.
    const ROUNDER: f32 = 12_582_912.0;
    // ln2 = LN2_HI + LN2_LO, where LN2_HI = 355/512 has so few bits that n·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Clamped so that n stays in [−126, 0] (2ⁿ normal); a NaN compares false and passes on.
    let clamped = if x < LOWEST { LOWEST } else { x };
    let shifted = madd::<FMA>(clamped, std::f32::consts::LOG2_E, ROUNDER);
    let n = shifted - ROUNDER;
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, clamped));
    let e_r = madd::<FMA>(r * r, horner::<FMA, 5>(r, &EXP_REMAINDER), 1.0 + r);
    // `shifted`'s bits are those of 1.5·2²³ plus n: adding the exponent bias and shifting the
    // low bits up into the exponent field drops the rest and leaves 2ⁿ.
    let two_to_n = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    if x < LOWEST { 0.0 } else { e_r * two_to_n }
}

/// S(r) = (e^r − 1 − r)/r² on |r| ≤ ln2/2 (fit error 3e-9 relative to e^r).
const EXP_REMAINDER: [f32; 5] = [
    0.499_999_94,
    0.166_665_21,
    0.041_668_39,
    0.008_368_71,
    0.001_381_46,
];

/// Σ coeffs[k]·x^k.
#[inline(always)]
fn horner<const FMA: bool, const N: usize>(x: f32, coeffs: &[f32; N]) -> f32 {
    let (&last, rest) = coeffs.split_last().expect("at least one coefficient");
    rest.iter()
        .rev()
        .fold(last, |acc, &c| madd::<FMA>(acc, x, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Row lengths around and across the eight-lane chunks.
    const LENGTHS: [usize; 7] = [1, 7, 8, 9, 127, 128, 300];

    /// `n` draws from U(lo, hi).
    fn uniform(n: usize, lo: f32, hi: f32, rng: &mut StdRng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    }

    /// Fails unless every |got[i] − want[i]| ≤ `allowed(i, want)`.
    fn assert_within(
        what: &str,
        got: &[f32],
        want: &[f32],
        allowed: impl Fn(usize, &[f32]) -> f32,
    ) {
        assert_eq!(got.len(), want.len(), "{what}: lengths differ");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let allowed = allowed(i, want);
            assert!(
                (g - w).abs() <= allowed,
                "{what}: element {i} of {}: {g} vs {w}, more than {allowed:e} apart",
                got.len()
            );
        }
    }

    /// Fails unless `got` and `want` agree within `rtol` relative to each element, with a floor
    /// of `rtol` relative to 1/100 of the largest |want| (where a difference of nearly equal
    /// values makes an element small).
    fn assert_agree(what: &str, got: &[f32], want: &[f32], rtol: f32) {
        let scale = want.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        assert_within(what, got, want, |i, want| {
            rtol * (want[i].abs() + scale * 1e-2).max(f32::MIN_POSITIVE)
        });
    }

    /// Runs `run(avx2_fma)` with the AVX2 instance and the portable one (where the CPU has
    /// AVX2 and FMA; elsewhere there is nothing to compare) and checks their outputs agree
    /// within `rtol`, as [`assert_agree`].
    #[cfg(target_arch = "x86_64")]
    fn both_paths(what: &str, rtol: f32, run: impl Fn(bool) -> Vec<f32>) {
        both_paths_within(what, run, |fast, portable| {
            assert_agree(what, fast, portable, rtol)
        });
    }

    /// As [`both_paths`], with the comparison `check(avx2, portable)`.
    #[cfg(target_arch = "x86_64")]
    fn both_paths_within(
        what: &str,
        run: impl Fn(bool) -> Vec<f32>,
        check: impl Fn(&[f32], &[f32]),
    ) {
        if !has_avx2_fma() {
            eprintln!("{what}: no AVX2 and FMA here, only the portable path ran");
            run(false);
            return;
        }
        let (fast, portable) = (run(true), run(false));
        check(&fast, &portable);
    }

    /// A row-wise kernel's inputs: a mask with padding, scores, probabilities, gradients.
    struct Rows {
        len: usize,
        rows: usize,
        mask: Vec<f32>,
        scores: Vec<f32>,
        probs: Vec<f32>,
        grad: Vec<f32>,
    }

    fn rows(len: usize, rng: &mut StdRng) -> Rows {
        let rows = 3;
        let mut mask = vec![0.0; len];
        // Padding at the end, as the encoder's mask has; the first key stays real.
        for m in mask.iter_mut().skip(1).skip(len * 3 / 4) {
            *m = -1e9;
        }
        let mut probs = uniform(rows * len, 0.0, 1.0, rng);
        for row in probs.chunks_exact_mut(len) {
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|p| *p /= sum);
        }
        Rows {
            len,
            rows,
            mask,
            scores: uniform(rows * len, -12.0, 12.0, rng),
            probs,
            grad: uniform(rows * len, -2.0, 2.0, rng),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_softmax_agree() {
        let mut rng = StdRng::seed_from_u64(41);
        for len in LENGTHS {
            let r = rows(len, &mut rng);
            both_paths(&format!("softmax rows, length {len}"), 1e-6, |fast| {
                let mut out = r.scores.clone();
                if fast {
                    // SAFETY: `both_paths` asks for the AVX2 instance only where the CPU has it.
                    unsafe { softmax_rows::avx2_fma(&mut out, &r.mask) }
                } else {
                    softmax_rows::portable(&mut out, &r.mask)
                }
                for row in out.chunks_exact(len) {
                    let sum: f32 = row.iter().sum();
                    assert!((sum - 1.0).abs() < 1e-5, "a row sums to {sum}");
                    assert!(
                        len < 4 || row[len - 1] == 0.0,
                        "padding keeps a probability"
                    );
                }
                out
            });
            both_paths(&format!("scaled softmax row, length {len}"), 1e-6, |fast| {
                let mut out = vec![0.0; r.rows * len];
                for (o, s) in out.chunks_exact_mut(len).zip(r.scores.chunks_exact(len)) {
                    if fast {
                        // SAFETY: `both_paths` asks for the AVX2 instance only where the CPU
                        // has it.
                        unsafe { scaled_softmax_row::avx2_fma(o, s, &r.mask, 0.3) }
                    } else {
                        scaled_softmax_row::portable(o, s, &r.mask, 0.3)
                    }
                }
                out
            });
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_softmax_gradients_agree() {
        let mut rng = StdRng::seed_from_u64(42);
        for len in LENGTHS {
            let r = rows(len, &mut rng);
            let rows_wise = |fast: bool| {
                let mut g = r.grad.clone();
                if fast {
                    // SAFETY: `both_paths` asks for the AVX2 instance only where the CPU has it.
                    unsafe { softmax_grad_rows::avx2_fma(&mut g, &r.probs, r.len, 0.125) }
                } else {
                    softmax_grad_rows::portable(&mut g, &r.probs, r.len, 0.125)
                }
                g
            };
            both_paths(&format!("softmax grad rows, length {len}"), 1e-5, rows_wise);
            let row_wise = |fast: bool| {
                let mut out = vec![0.0; r.rows * len];
                let inputs = r.probs.chunks_exact(len).zip(r.grad.chunks_exact(len));
                for (o, (p, g)) in out.chunks_exact_mut(len).zip(inputs) {
                    if fast {
                        // SAFETY: `both_paths` asks for the AVX2 instance only where the CPU
                        // has it.
                        unsafe { softmax_grad_row::avx2_fma(o, p, g, 0.125) }
                    } else {
                        softmax_grad_row::portable(o, p, g, 0.125)
                    }
                }
                out
            };
            both_paths(&format!("softmax grad row, length {len}"), 1e-5, row_wise);
            // The in-place and the out-of-place kernels are the same maths.
            assert_agree(
                "softmax grad in place",
                &rows_wise(false),
                &row_wise(false),
                0.0,
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_products_agree_exactly() {
        let mut rng = StdRng::seed_from_u64(43);
        for len in LENGTHS {
            let (a, b) = (
                uniform(len, -3.0, 3.0, &mut rng),
                uniform(len, 0.0, 2.0, &mut rng),
            );
            both_paths(&format!("product, length {len}"), 0.0, |fast| {
                let mut out = vec![0.0; len];
                if fast {
                    // SAFETY: `both_paths` asks for the AVX2 instance only where the CPU has it.
                    unsafe { product::avx2_fma(&mut out, &a, &b) }
                } else {
                    product::portable(&mut out, &a, &b)
                }
                assert!(
                    out.iter()
                        .zip(a.iter().zip(&b))
                        .all(|(o, (a, b))| *o == a * b)
                );
                out
            });
            both_paths(&format!("scale by, length {len}"), 0.0, |fast| {
                let mut x = a.clone();
                if fast {
                    // SAFETY: `both_paths` asks for the AVX2 instance only where the CPU has it.
                    unsafe { scale_by::avx2_fma(&mut x, &b) }
                } else {
                    scale_by::portable(&mut x, &b)
                }
                x
            });
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_group_scales_agree() {
        let mut rng = StdRng::seed_from_u64(47);
        for (groups, width) in [(1, 1), (5, 1), (300, 1), (3, 7), (12, 32), (2, 127)] {
            let len = 3 * groups * width;
            let x = uniform(len, -3.0, 3.0, &mut rng);
            let grad = uniform(len, -1.0, 1.0, &mut rng);
            let scale = uniform(groups, 0.0, 2.0, &mut rng);
            both_paths(&format!("group scale, {groups} × {width}"), 0.0, |fast| {
                let mut out = vec![0.0; len];
                if fast {
                    // SAFETY: `both_paths` asks for the AVX2 instance only where the CPU has it.
                    unsafe { group_scale_rows::avx2_fma(&mut out, &x, &scale, width) }
                } else {
                    group_scale_rows::portable(&mut out, &x, &scale, width)
                }
                out
            });
            both_paths(
                &format!("group scale grad, {groups} × {width}"),
                1e-5,
                |fast| {
                    let (mut dx, mut ds) = (vec![0.0; len], vec![0.0; groups]);
                    if fast {
                        // SAFETY: as above.
                        unsafe {
                            group_scale_grad_rows::avx2_fma(
                                &mut dx, &mut ds, &x, &grad, &scale, width,
                            )
                        }
                    } else {
                        group_scale_grad_rows::portable(&mut dx, &mut ds, &x, &grad, &scale, width)
                    }
                    // Against the definition, summed in f64.
                    for (j, &d) in ds.iter().enumerate() {
                        let want: f64 = (0..3)
                            .flat_map(|r| {
                                (0..width).map(move |k| r * groups * width + j * width + k)
                            })
                            .map(|i| grad[i] as f64 * x[i] as f64)
                            .sum();
                        assert!(
                            (d as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{d} vs {want}"
                        );
                    }
                    dx.extend(ds);
                    dx
                },
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_layer_norms_agree() {
        let mut rng = StdRng::seed_from_u64(44);
        for len in LENGTHS {
            let x = uniform(3 * len, -4.0, 9.0, &mut rng);
            let grad = uniform(3 * len, -1.0, 1.0, &mut rng);
            let gamma = uniform(len, 0.5, 1.5, &mut rng);
            let beta = uniform(len, -0.2, 0.2, &mut rng);
            both_paths(&format!("layer norm, length {len}"), 1e-6, |fast| {
                let mut y = vec![0.0; x.len()];
                if fast {
                    // SAFETY: `both_paths` asks for the AVX2 instance only where the CPU has it.
                    unsafe { layer_norm_rows::avx2_fma(&mut y, &x, &gamma, &beta, 1e-5) }
                } else {
                    layer_norm_rows::portable(&mut y, &x, &gamma, &beta, 1e-5)
                }
                y
            });
            // In place on a sum: exactly the sum's LayerNorm, on each path.
            let residual = uniform(3 * len, -1.0, 1.0, &mut rng);
            let sum: Vec<f32> = x.iter().zip(&residual).map(|(a, b)| a + b).collect();
            let (mut want, mut got) = (vec![0.0; x.len()], x.clone());
            layer_norm_rows::portable(&mut want, &sum, &gamma, &beta, 1e-5);
            add_layer_norm_in_place::portable(&mut got, &residual, &gamma, &beta, 1e-5);
            assert_eq!(got, want, "add and layer norm in place, length {len}");
            if has_avx2_fma() {
                let (mut want, mut got) = (vec![0.0; x.len()], x.clone());
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                unsafe {
                    layer_norm_rows::avx2_fma(&mut want, &sum, &gamma, &beta, 1e-5);
                    add_layer_norm_in_place::avx2_fma(&mut got, &residual, &gamma, &beta, 1e-5);
                }
                assert_eq!(
                    got, want,
                    "add and layer norm in place (avx2), length {len}"
                );
            }
            both_paths(
                &format!("layer norm gradient, length {len}"),
                1e-5,
                |fast| {
                    let mut dx = vec![0.0; x.len()];
                    if fast {
                        // SAFETY: `both_paths` asks for the AVX2 instance only where the CPU
                        // has it.
                        unsafe { layer_norm_grad_rows::avx2_fma(&mut dx, &x, &grad, &gamma, 1e-5) }
                    } else {
                        layer_norm_grad_rows::portable(&mut dx, &x, &grad, &gamma, 1e-5)
                    }
                    dx
                },
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_row_norms_agree_with_the_plain_sum() {
        let mut rng = StdRng::seed_from_u64(46);
        for len in LENGTHS {
            let x = uniform(3 * len, -2.0, 2.0, &mut rng);
            let want: Vec<f32> = x
                .chunks_exact(len)
                .map(|r| r.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32)
                .collect();
            both_paths(&format!("row norms, length {len}"), 1e-6, |fast| {
                let mut norms = vec![0.0; 3];
                if fast {
                    // SAFETY: `both_paths` asks for the AVX2 instance only where the CPU has it.
                    unsafe { row_norms::avx2_fma(&mut norms, &x) }
                } else {
                    row_norms::portable(&mut norms, &x)
                }
                for (n, w) in norms.iter().zip(&want) {
                    assert!((n - w).abs() <= 1e-5 * w, "length {len}: {n} against {w}");
                }
                norms
            });
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_gelus_agree() {
        let mut rng = StdRng::seed_from_u64(45);
        for len in LENGTHS {
            // Both sides of erf's switch (|x| = √2) and of its saturation.
            let x = uniform(len, -7.0, 7.0, &mut rng);
            let grad = uniform(len, -1.0, 1.0, &mut rng);
            let mut y = vec![0.0; len];
            gelu_forward::portable(&mut y, &x);
            // For x < 0, GELU = x/2·(1 + erf) cancels, and is only as exact as erf: each path
            // within 1.5e-7 of it (the erf test), so within x/2·3e-7 of each other. The
            // gradient reads Φ = (1 + erf)/2 off y/x, within 1.5e-7 on each path.
            let what = format!("gelu, length {len}");
            let run = |fast: bool| {
                let mut out = vec![0.0; len];
                if fast {
                    // SAFETY: `both_paths_within` asks for the AVX2 instance only where the CPU
                    // has it.
                    unsafe { gelu_forward::avx2_fma(&mut out, &x) }
                } else {
                    gelu_forward::portable(&mut out, &x)
                }
                out
            };
            both_paths_within(&what, run, |fast, portable| {
                assert_within(&what, fast, portable, |i, want| {
                    1e-6 * want[i].abs() + 0.5 * x[i].abs() * 3e-7
                })
            });
            let mut in_place = x.clone();
            gelu_in_place::portable(&mut in_place);
            assert_eq!(in_place, y, "gelu in place, length {len}");
            if has_avx2_fma() {
                let (mut fast, mut fast_in_place) = (vec![0.0; len], x.clone());
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                unsafe {
                    gelu_forward::avx2_fma(&mut fast, &x);
                    gelu_in_place::avx2_fma(&mut fast_in_place);
                }
                assert_eq!(fast_in_place, fast, "gelu in place (avx2), length {len}");
            }
            let what = format!("gelu gradient, length {len}");
            let run = |fast: bool| {
                let mut dx = vec![0.0; len];
                if fast {
                    // SAFETY: `both_paths_within` asks for the AVX2 instance only where the CPU
                    // has it.
                    unsafe { gelu_backward::avx2_fma(&mut dx, &x, &y, &grad) }
                } else {
                    gelu_backward::portable(&mut dx, &x, &y, &grad)
                }
                dx
            };
            both_paths_within(&what, run, |fast, portable| {
                assert_within(&what, fast, portable, |i, want| {
                    1e-6 * want[i].abs() + grad[i].abs() * 3e-7
                })
            });
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_dropout_masks_agree_exactly() {
        let (seed, threshold, keep_scale) = (0x1234_5678_9abc_def0, u32::MAX / 10, 1.0 / 0.9);
        for len in LENGTHS {
            let first_pair = 1_000_003;
            both_paths(&format!("dropout pairs, {len} pairs"), 0.0, |fast| {
                let mut out = vec![f32::NAN; 2 * len];
                if fast {
                    // SAFETY: `both_paths` asks for the AVX2 instance only where the CPU has it.
                    unsafe {
                        dropout_pairs::avx2_fma(&mut out, seed, first_pair, threshold, keep_scale)
                    }
                } else {
                    dropout_pairs::portable(&mut out, seed, first_pair, threshold, keep_scale)
                }
                // Each pair is its own draw's halves, low first.
                for (pair, index) in out.chunks_exact(2).zip(first_pair..) {
                    let bits = pair_bits(seed, index);
                    let want = [bits as u32, (bits >> 32) as u32]
                        .map(|draw| dropout_factor(draw, threshold, keep_scale));
                    assert_eq!(pair, want, "pair {index}");
                }
                out
            });
        }
        let mut many = vec![0.0; 100_000];
        dropout_pairs(&mut many, seed, 0, threshold, keep_scale);
        let dropped = many.iter().filter(|&&f| f == 0.0).count();
        assert!(
            (9_000..11_000).contains(&dropped),
            "{dropped} of 100000 dropped at p = 0.1"
        );
    }

    #[test]
    fn erf_is_within_1_5e_7_of_libm_on_a_dense_grid() {
        let grid = || {
            (-700_000..=700_000).map(|i| i as f32 * 1e-5).chain([
                20.0,
                -20.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
            ])
        };
        let reference = |t: f32| candle_core::cpu::erf::erf_f64(t as f64);
        let unfused = grid()
            .map(|t| (erf::<false>(t) as f64 - reference(t)).abs())
            .fold(0.0, f64::max);
        // `mul_add` outside the AVX2 instance is libm's fmaf: the same roundings, slower.
        let fused = grid()
            .map(|t| (erf::<true>(t) as f64 - reference(t)).abs())
            .fold(0.0, f64::max);
        assert!(unfused <= 1.5e-7, "erf is off by {unfused:e}");
        assert!(
            fused <= 1.5e-7,
            "erf with fused multiply-adds is off by {fused:e}"
        );
        assert!(erf::<false>(f32::NAN).is_nan() && erf::<true>(f32::NAN).is_nan());
    }

    #[test]
    fn exp_is_within_2_ulp_and_flushes_below_the_normal_range() {
        fn worst(exp: fn(f32) -> f32) -> f64 {
            (0..=873_000)
                .map(|i| i as f32 * -1e-4)
                .map(|x| (exp(x) as f64 / (x as f64).exp() - 1.0).abs())
                .fold(0.0, f64::max)
        }
        for (what, exp) in [
            ("unfused", exp_nonpositive::<false> as fn(f32) -> f32),
            ("fused", exp_nonpositive::<true>),
        ] {
            let worst = worst(exp);
            assert!(
                worst <= 2.0 * f32::EPSILON as f64,
                "{what} exp is off by {worst:e} relative"
            );
            assert_eq!(exp(0.0), 1.0, "{what}");
            assert_eq!(exp(-87.4), 0.0, "{what}");
            assert_eq!(exp(-1e9), 0.0, "{what}");
            assert_eq!(exp(f32::NEG_INFINITY), 0.0, "{what}");
            assert!(exp(f32::NAN).is_nan(), "{what}");
            // The smallest result above the flush is still normal.
            assert!(exp(-87.3).is_normal(), "{what}");
        }
    }
}
