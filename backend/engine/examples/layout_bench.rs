//! GFLOP/s of a frozen layer's two products on one thread, with its weight stored either way:
//! `[out, in]` (Hugging Face's layout) or `[in, out]` (what `peft::FrozenLinear` keeps when
//! in ≥ out). The forward product is `x·Wᵀ`, the backward one `grad·W`; `rows` is a block of
//! rows as one of `ops::gemm`'s worker threads multiplies it (a 16 × 64 batch on two threads
//! splits into blocks of 256).
//!
//! cargo run --release -p lightpeft-engine --example layout_bench -- [--rows 256] [--reps 30]

use std::time::Instant;

/// `dst (rows × n, row-major) = lhs · rhs` through the gemm crate on this thread, with the
/// operands' (row, column) strides.
fn product(
    dst: &mut [f32],
    (m, k, n): (usize, usize, usize),
    lhs: (&[f32], isize, isize),
    rhs: (&[f32], isize, isize),
) {
    assert!(dst.len() == m * n && lhs.0.len() >= m * k && rhs.0.len() >= k * n);
    // SAFETY: the strides address only elements inside the slices (checked above for the
    // row-major and transposed views used below), and `dst` is borrowed mutably.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.0.as_ptr(),
            lhs.2,
            lhs.1,
            rhs.0.as_ptr(),
            rhs.2,
            rhs.1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Best GFLOP/s over `reps` runs of `f`, which does `flop` floating-point operations.
fn best_gflops(reps: usize, flop: f64, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..=reps {
        let start = Instant::now();
        f();
        best = best.min(start.elapsed().as_secs_f64());
    }
    flop / best / 1e9
}

fn main() {
    let (mut rows, mut reps) = (256, 30);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rows" => rows = value.parse().expect("--rows: a number"),
            "--reps" => reps = value.parse().expect("--reps: a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    println!(
        "{rows} rows, one thread, best of {reps}; GFLOP/s with W stored as [out, in] | [in, out]"
    );
    println!();
    println!("| layer (in → out) | forward x·Wᵀ | | backward grad·W | |");
    println!("|---|---|---|---|---|");
    for (inp, out, what) in [
        (384, 384, "attention"),
        (384, 1536, "FFN intermediate"),
        (1536, 384, "FFN output"),
    ] {
        let x: Vec<f32> = (0..rows * inp).map(|i| (i as f32 * 1e-3).sin()).collect();
        let grad: Vec<f32> = (0..rows * out).map(|i| (i as f32 * 2e-3).cos()).collect();
        let w: Vec<f32> = (0..out * inp).map(|i| (i as f32 * 3e-3).cos()).collect();
        let flop = 2.0 * (rows * inp * out) as f64;
        let (mut y, mut dx) = (vec![0.0; rows * out], vec![0.0; rows * inp]);
        let mut cells = Vec::new();
        for transposed in [false, true] {
            // Wᵀ as a k × n = in × out operand, and W as out × in, in this storage.
            let (w_t, w_plain) = if transposed {
                ((&w[..], out as isize, 1), (&w[..], 1, out as isize))
            } else {
                ((&w[..], 1, inp as isize), (&w[..], inp as isize, 1))
            };
            let x_rows = (&x[..], inp as isize, 1);
            let g_rows = (&grad[..], out as isize, 1);
            let forward = best_gflops(reps, flop, || {
                product(&mut y, (rows, inp, out), x_rows, w_t)
            });
            let backward = best_gflops(reps, flop, || {
                product(&mut dx, (rows, out, inp), g_rows, w_plain)
            });
            cells.push((forward, backward));
        }
        println!(
            "| {what} ({inp} → {out}) | {:.1} | {:.1} | {:.1} | {:.1} |",
            cells[0].0, cells[1].0, cells[0].1, cells[1].1
        );
    }
}
