//! A bounds-checked front to the `gemm` crate's f32 kernel: strided views instead of copies, and
//! products that accumulate into their destination.

use gemm::Parallelism;

/// A read-only `rows × cols` f32 matrix view with arbitrary (non-negative) strides.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// The row-major matrix stored in `data`.
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// Element `(i, j)` at `data[i·row_stride + j·col_stride]`.
    pub(crate) fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        let last = (rows.max(1) - 1) * row_stride + (cols.max(1) - 1) * col_stride;
        assert!(
            rows == 0 || cols == 0 || last < data.len(),
            "a {rows}×{cols} view with strides ({row_stride}, {col_stride}) overruns {} elements",
            data.len()
        );
        Mat {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// Number of rows.
    pub(crate) fn rows_count(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub(crate) fn cols_count(&self) -> usize {
        self.cols
    }

    /// The elements of a row-major view, in order.
    pub(crate) fn contiguous_data(&self) -> &'a [f32] {
        assert!(
            self.col_stride == 1 && self.row_stride == self.cols,
            "the view is not row-major"
        );
        &self.data[..self.rows * self.cols]
    }

    /// Rows `first..first + rows` of the view.
    pub(crate) fn row_block(self, first: usize, rows: usize) -> Self {
        Mat {
            data: &self.data[first * self.row_stride..],
            rows,
            ..self
        }
    }

    /// The transpose, as a view of the same data.
    pub(crate) fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// How a product lands in its destination.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Write {
    /// `dst = scale · lhs · rhs`.
    Set,
    /// `dst += scale · lhs · rhs`.
    Add,
}

/// `dst (row-major, lhs.rows × rhs.cols) ⟵ scale · lhs · rhs`, spread over candle's worker
/// threads when `threads` > 1 (1: on the calling thread).
pub(crate) fn matmul(
    dst: &mut [f32],
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    write: Write,
    threads: usize,
) {
    let n = rhs.cols;
    assert_eq!(
        dst.len(),
        lhs.rows * n,
        "matmul: destination is not {}×{n}",
        lhs.rows
    );
    matmul_rows(dst, n, lhs, rhs, scale, write, threads);
}

/// As [`matmul`], into a destination whose rows start `dst_row_stride` elements apart (a
/// column block of a wider row-major matrix).
pub(crate) fn matmul_rows(
    dst: &mut [f32],
    dst_row_stride: usize,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    write: Write,
    threads: usize,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "matmul: {m}×{k} times {}×{n}", rhs.rows);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n <= dst_row_stride && (m - 1) * dst_row_stride + n <= dst.len(),
        "matmul: a {m}×{n} destination with row stride {dst_row_stride} overruns {} elements",
        dst.len()
    );
    if k == 0 {
        if write == Write::Set {
            for row in dst.chunks_mut(dst_row_stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    // Rows are split into blocks that candle's worker threads take in turn, each a
    // single-threaded gemm: the same threads as the element-wise ops, rather than a second
    // (rayon) pool whose threads would compete with candle's spinning ones for the cores.
    let blocks = row_blocks(m, threads);
    if blocks == 1 {
        gemm_block(dst, dst_row_stride, lhs, rhs, scale, write);
        return;
    }
    let rows_per_block = m.div_ceil(blocks);
    let parts = dst.chunks_mut(rows_per_block * dst_row_stride).take(blocks);
    super::each_block(parts, |index, part| {
        let first = index * rows_per_block;
        let lhs_rows = lhs.row_block(first, rows_per_block.min(m - first));
        gemm_block(part, dst_row_stride, lhs_rows, rhs, scale, write);
    });
}

/// What a [`matmul_onto`] product lands on.
#[derive(Clone, Copy)]
pub(crate) enum Start<'a> {
    /// Zeros.
    Zeros,
    /// The same row (a bias) under every row of the product.
    Row(&'a [f32]),
    /// A whole matrix of the product's shape, row-major.
    Matrix(&'a [f32]),
}

/// A new row-major `lhs.rows × rhs.cols` matrix `start + scale · lhs · rhs`.
///
/// Each block of rows is written with its start by the thread that then runs its product,
/// instead of the calling thread filling the whole buffer first (while the others wait) and
/// the product reading it back from farther out in the cache; and the buffer is never zeroed
/// before the start is written over it.
pub(crate) fn matmul_onto(
    start: Start,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    threads: usize,
) -> Vec<f32> {
    matmul_onto_then(start, lhs, rhs, scale, threads, |_, _| {})
}

/// [`matmul_onto`], then `finish(first_row, block)` on each finished block of whole rows, by
/// the thread that computed it while the block is still in its cache (an activation in place,
/// where nothing needs the product itself afterwards).
pub(crate) fn matmul_onto_then(
    start: Start,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    threads: usize,
    finish: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "matmul: {m}×{k} times {}×{n}", rhs.rows);
    match start {
        Start::Zeros => {}
        Start::Row(row) => assert_eq!(row.len(), n, "matmul: a start row of {}", row.len()),
        Start::Matrix(all) => assert_eq!(all.len(), m * n, "matmul: a start of {}", all.len()),
    }
    let mut out = Vec::with_capacity(m * n);
    if m == 0 || n == 0 {
        return out;
    }
    let blocks = row_blocks(m, threads);
    let rows_per_block = m.div_ceil(blocks);
    let parts = out.spare_capacity_mut()[..m * n].chunks_mut(rows_per_block * n);
    super::each_block(parts, |index, part| {
        let first = index * rows_per_block;
        let lhs_rows = lhs.row_block(first, part.len() / n);
        let dst = init_block(part, start, first, n);
        if k > 0 {
            gemm_block(dst, n, lhs_rows, rhs, scale, Write::Add);
        }
        finish(first, dst);
    });
    // SAFETY: the blocks cover the first m·n elements, and `init_block` wrote every one.
    unsafe { out.set_len(m * n) };
    out
}

/// Writes rows `first..` of `start` (`n` wide) into `part` and gives it back initialised.
fn init_block<'p>(
    part: &'p mut [std::mem::MaybeUninit<f32>],
    start: Start,
    first: usize,
    n: usize,
) -> &'p mut [f32] {
    match start {
        Start::Zeros => part.fill(std::mem::MaybeUninit::new(0.0)),
        Start::Row(row) => {
            for dst in part.chunks_exact_mut(n) {
                for (d, &v) in dst.iter_mut().zip(row) {
                    d.write(v);
                }
            }
        }
        Start::Matrix(all) => {
            let src = &all[first * n..first * n + part.len()];
            for (d, &v) in part.iter_mut().zip(src) {
                d.write(v);
            }
        }
    }
    // SAFETY: every element of `part` was written just above, and `MaybeUninit<f32>` has
    // `f32`'s layout.
    unsafe { &mut *(part as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
}

/// How many blocks of rows a product of `m` rows is split into over `threads` threads.
fn row_blocks(m: usize, threads: usize) -> usize {
    if threads > 1 {
        (threads * 2).min(m / MIN_BLOCK_ROWS).max(1)
    } else {
        1
    }
}

/// Fewest rows worth a block of their own.
const MIN_BLOCK_ROWS: usize = 32;

/// One single-threaded gemm call; the caller checked the shapes and the destination's extent.
fn gemm_block(
    dst: &mut [f32],
    dst_row_stride: usize,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    write: Write,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    debug_assert!((m - 1) * dst_row_stride + n <= dst.len());
    debug_assert!(
        lhs.rows == 0 || (m - 1) * lhs.row_stride + (k - 1) * lhs.col_stride < lhs.data.len()
    );
    // SAFETY: `Mat::strided` checked that every element a view addresses lies inside its slice
    // (a block of rows is a prefix-trimmed view of the same extent), the destination's m rows
    // of n elements fit in `dst` (checked by the caller), and `dst` is borrowed mutably, so it
    // cannot alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row_stride as isize,
            write == Write::Add,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(lhs: Mat, rhs: Mat) -> Vec<f32> {
        let at = |m: &Mat, i: usize, j: usize| m.data[i * m.row_stride + j * m.col_stride];
        let mut out = vec![0.0; lhs.rows * rhs.cols];
        for i in 0..lhs.rows {
            for j in 0..rhs.cols {
                out[i * rhs.cols + j] =
                    (0..lhs.cols).map(|p| at(&lhs, i, p) * at(&rhs, p, j)).sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_set_and_accumulate() {
        let a: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..30).map(|i| (i as f32 * 0.11).cos()).collect();
        // A 4×6 row-major matrix times the transpose of a 5×6 one, then a strided 3×2 view.
        let (lhs, rhs) = (Mat::rows(&a, 4, 6), Mat::rows(&b, 5, 6).t());
        let mut dst = vec![1.0; 20];
        matmul(&mut dst, lhs, rhs, 2.0, Write::Set, 1);
        let want: Vec<f32> = naive(lhs, rhs).iter().map(|v| 2.0 * v).collect();
        assert!(dst.iter().zip(&want).all(|(d, w)| (d - w).abs() < 1e-5));
        matmul(&mut dst, lhs, rhs, -1.0, Write::Add, 2);
        let half: Vec<f32> = want.iter().map(|w| w / 2.0).collect();
        assert!(dst.iter().zip(&half).all(|(d, w)| (d - w).abs() < 1e-5));
        let view = Mat::strided(&a, 3, 2, 8, 3);
        let mut small = vec![0.0; 9];
        matmul(&mut small, view, view.t(), 1.0, Write::Set, 1);
        assert_eq!(small, naive(view, view.t()));
        // The same product into the first three columns of a 3×5 matrix.
        let mut wide = vec![7.0; 15];
        matmul_rows(&mut wide, 5, view, view.t(), 1.0, Write::Set, 1);
        for (i, row) in wide.chunks(5).enumerate() {
            assert_eq!(row[3..], [7.0, 7.0]);
            assert_eq!(row[..3], small[i * 3..i * 3 + 3]);
        }
    }

    #[test]
    fn blocks_of_rows_on_worker_threads_give_the_whole_product() {
        let a: Vec<f32> = (0..200 * 7).map(|i| (i as f32 * 0.013).sin()).collect();
        let b: Vec<f32> = (0..7 * 9).map(|i| (i as f32 * 0.7).cos()).collect();
        let (lhs, rhs) = (Mat::rows(&a, 200, 7), Mat::rows(&b, 7, 9));
        let want = naive(lhs, rhs);
        let mut dst = vec![0.0; 200 * 9];
        matmul(&mut dst, lhs, rhs, 1.0, Write::Set, 3);
        assert!(dst.iter().zip(&want).all(|(d, w)| (d - w).abs() < 1e-5));
    }

    #[test]
    fn products_onto_a_start_add_it_on_any_number_of_threads() {
        let a: Vec<f32> = (0..150 * 6).map(|i| (i as f32 * 0.021).sin()).collect();
        let b: Vec<f32> = (0..6 * 7).map(|i| (i as f32 * 0.3).cos()).collect();
        let (lhs, rhs) = (Mat::rows(&a, 150, 6), Mat::rows(&b, 7, 6).t());
        let product = naive(lhs, rhs);
        let row: Vec<f32> = (0..7).map(|j| j as f32 - 3.0).collect();
        let all: Vec<f32> = (0..150 * 7).map(|i| (i % 11) as f32).collect();
        for threads in [1, 2, 3] {
            for (start, at) in [
                (Start::Zeros, &(|_: usize| 0.0f32) as &dyn Fn(usize) -> f32),
                (Start::Row(&row), &|i| row[i % 7]),
                (Start::Matrix(&all), &|i| all[i]),
            ] {
                let got = matmul_onto(start, lhs, rhs, 0.5, threads);
                assert_eq!(got.len(), 150 * 7);
                for (i, (g, p)) in got.iter().zip(&product).enumerate() {
                    assert!(
                        (g - (at(i) + 0.5 * p)).abs() < 1e-5,
                        "{threads} threads, {i}"
                    );
                }
            }
        }
        // No inner dimension: the start itself.
        let empty = Mat::rows(&[], 2, 0);
        let got = matmul_onto(Start::Row(&[1.0, 2.0]), empty, Mat::rows(&[], 0, 2), 1.0, 2);
        assert_eq!(got, [1.0, 2.0, 1.0, 2.0]);
    }

    #[test]
    fn a_finish_sees_every_finished_row_once_with_its_index() {
        let a: Vec<f32> = (0..150 * 6).map(|i| (i as f32 * 0.017).cos()).collect();
        let b: Vec<f32> = (0..6 * 5).map(|i| (i as f32 * 0.2).sin()).collect();
        let (lhs, rhs) = (Mat::rows(&a, 150, 6), Mat::rows(&b, 5, 6).t());
        let product = naive(lhs, rhs);
        for threads in [1, 2, 3] {
            let seen = std::sync::Mutex::new(vec![0; 150]);
            // Each element becomes its row index plus twice the product: a finish that ran on a
            // wrong row, twice, or before the product would show.
            let got = matmul_onto_then(Start::Zeros, lhs, rhs, 1.0, threads, |first, block| {
                for (i, row) in block.chunks_exact_mut(5).enumerate() {
                    seen.lock().unwrap()[first + i] += 1;
                    for v in row {
                        *v = 2.0 * *v + (first + i) as f32;
                    }
                }
            });
            assert!(
                seen.into_inner().unwrap().iter().all(|&n| n == 1),
                "{threads} threads"
            );
            for (i, (g, p)) in got.iter().zip(&product).enumerate() {
                assert!(
                    (g - (2.0 * p + (i / 5) as f32)).abs() < 1e-4,
                    "{threads} threads, {i}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn views_past_the_data_are_refused() {
        Mat::strided(&[0.0; 10], 3, 4, 4, 1);
    }
}
