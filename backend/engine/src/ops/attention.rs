//! Scaled dot-product attention over the projections' own layout, as one graph node.
//!
//! Composed from candle's ops, attention transposes Q, K and V to `[batch, heads, seq, dim]`
//! (three copies), the context back (a fourth), and runs the score products as one small gemm
//! per head, one after another. Here every head reads its columns of the `[batch·seq,
//! heads·dim]` projections in place through strided views, writes its context columns
//! directly, and the sequences of a batch are spread over the worker threads. The softmax
//! probabilities are kept for the backward pass; the dropout mask is recomputed from its seed.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::gemm::{Mat, Write, matmul, matmul_rows};
use super::{Dropout, f32_slice, host_f32, kernels};

/// `softmax(Q·Kᵀ·scale + mask)` (then dropout) times V, per head, for `[batch·seq, heads·dim]`
/// keys and values, `[batch·queries, heads·dim]` queries and an additive `[batch, 1, 1, seq]`
/// padding mask.
pub(crate) struct Attention {
    pub(crate) batch: usize,
    /// Keys (and values) per sequence.
    pub(crate) seq: usize,
    /// Queries per sequence: `seq`, or fewer where only the first positions' outputs are used.
    pub(crate) queries: usize,
    pub(crate) heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) scale: f32,
    pub(crate) mask: Tensor,
    pub(crate) dropout: Option<Dropout>,
    /// The probabilities `[batch, heads, queries, seq]`, before dropout, for the backward pass.
    pub(crate) saved: Mutex<Option<Vec<f32>>>,
    /// Whether to keep them (only when a gradient will be asked for).
    pub(crate) keep: bool,
}

impl Attention {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Head `h` of sequence `b` of a `[batch·rows, heads·dim]` projection, as a `rows × dim`
    /// view (`rows`: `seq` for keys and values, `queries` for queries).
    fn head<'a>(&self, data: &'a [f32], rows: usize, b: usize, h: usize) -> Mat<'a> {
        let start = b * rows * self.width() + h * self.head_dim;
        Mat::strided(&data[start..], rows, self.head_dim, self.width(), 1)
    }

    /// Checks that `data` is `[batch·rows, heads·dim]`.
    fn check(&self, op: &str, what: &str, data: &[f32], rows: usize) -> candle_core::Result<()> {
        if data.len() != self.batch * rows * self.width() {
            candle_core::bail!(
                "{op}: {what} has {} elements, not [{} · {rows}, {} · {}]",
                data.len(),
                self.batch,
                self.heads,
                self.head_dim
            );
        }
        Ok(())
    }

    /// `dropped = P ⊙ dropout factors` for the probabilities `p` of the head whose first row
    /// is `first_row` (global row index over all heads), using `factors` (`seq²` long) as
    /// scratch; `None` without dropout, where `P` itself is what multiplies V.
    fn drop_out<'a>(
        &self,
        first_row: usize,
        p: &[f32],
        factors: &'a mut [f32],
        dropped: &'a mut [f32],
    ) -> Option<(&'a [f32], &'a [f32])> {
        let d = self.dropout.as_ref()?;
        // A head's rows are consecutive, so its factors are one run of the mask.
        d.write_mask(first_row * self.seq, factors);
        kernels::product(dropped, p, factors);
        Some((factors, dropped))
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let q = f32_slice(name, "queries", q, q_layout)?;
        let k = f32_slice(name, "keys", k, k_layout)?;
        let v = f32_slice(name, "values", v, v_layout)?;
        let (l, ql) = (self.seq, self.queries);
        for (what, data, rows) in [("queries", q, ql), ("keys", k, l), ("values", v, l)] {
            self.check(name, what, data, rows)?;
        }
        let (mask_storage, mask_layout) = self.mask.storage_and_layout();
        let mask = host_f32(name, "mask", &mask_storage, mask_layout)?;
        let w = self.width();
        if mask.len() != self.batch * l {
            candle_core::bail!(
                "{name}: mask {:?} is not [{}, 1, 1, {l}]",
                mask_layout.dims(),
                self.batch
            );
        }
        let mut context = vec![0.0; self.batch * ql * w];
        let mut probs = vec![0.0; self.batch * self.heads * ql * l];
        let units: Vec<Mutex<(&mut [f32], &mut [f32])>> = context
            .chunks_mut(ql * w)
            .zip(probs.chunks_mut(self.heads * ql * l))
            .map(Mutex::new)
            .collect();
        per_sequence(units.len(), |b| {
            let mut unit = units[b].lock().expect("one worker per sequence");
            let (context, probs) = &mut *unit;
            let mask = &mask[b * l..(b + 1) * l];
            let scratch = if self.dropout.is_some() { ql * l } else { 0 };
            let (mut factors, mut dropped) = (vec![0.0; scratch], vec![0.0; scratch]);
            for h in 0..self.heads {
                let p = &mut probs[h * ql * l..(h + 1) * ql * l];
                let (qh, kh) = (self.head(q, ql, b, h), self.head(k, l, b, h));
                matmul(p, qh, kh.t(), self.scale, Write::Set, 1);
                kernels::softmax_rows(p, mask);
                let first_row = (b * self.heads + h) * ql;
                let values = match self.drop_out(first_row, p, &mut factors, &mut dropped) {
                    Some((_, dropped)) => dropped,
                    None => &p[..],
                };
                let ctx = &mut context[h * self.head_dim..];
                matmul_rows(
                    ctx,
                    w,
                    Mat::rows(values, ql, l),
                    self.head(v, l, b, h),
                    1.0,
                    Write::Set,
                    1,
                );
            }
        });
        drop(units);
        if self.keep {
            *self.saved.lock().expect("not poisoned") = Some(probs);
        }
        Ok((CpuStorage::F32(context), q_layout.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _context: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(probs) = self.saved.lock().expect("not poisoned").take() else {
            candle_core::bail!(
                "fused-attention: backward ran twice, or without a forward that kept its probabilities"
            )
        };
        let op = AttentionGrad {
            fwd: self,
            probs,
            k: k.detach(),
            v: v.detach(),
        };
        // The kernel packs [dq | dk | dv] into one buffer.
        let (nq, nk) = (q.elem_count(), k.elem_count());
        let grads = q.detach().apply_op2_no_bwd(&grad.contiguous()?, &op)?;
        let dq = grads.narrow(0, 0, nq)?.reshape(q.shape())?;
        let dk = grads.narrow(0, nq, nk)?.reshape(k.shape())?;
        let dv = grads.narrow(0, nq + nk, nk)?.reshape(v.shape())?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// The backward kernel over `(q, grad)`, with, per head and with `P̃` the dropped-out
/// probabilities: `dV = P̃ᵀ·dC`, `dP = dropout(dC·Vᵀ)`, `dS = scale·P⊙(dP − rowsum(dP⊙P))`,
/// `dQ = dS·K`, `dK = dSᵀ·Q`.
struct AttentionGrad<'a> {
    fwd: &'a Attention,
    probs: Vec<f32>,
    k: Tensor,
    v: Tensor,
}

impl CustomOp2 for AttentionGrad<'_> {
    fn name(&self) -> &'static str {
        "fused-attention-grad"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let a = self.fwd;
        let q = f32_slice(name, "queries", q, q_layout)?;
        let grad = f32_slice(name, "gradient", grad, grad_layout)?;
        let (k_storage, k_layout) = self.k.storage_and_layout();
        let (v_storage, v_layout) = self.v.storage_and_layout();
        let k = host_f32(name, "keys", &k_storage, k_layout)?;
        let v = host_f32(name, "values", &v_storage, v_layout)?;
        let (l, ql, w) = (a.seq, a.queries, a.width());
        for (what, data, rows) in [
            ("queries", q, ql),
            ("gradient", grad, ql),
            ("keys", k, l),
            ("values", v, l),
        ] {
            a.check(name, what, data, rows)?;
        }
        let (nq, nk) = (q.len(), k.len());
        let mut packed = vec![0.0; nq + 2 * nk];
        let (dq, rest) = packed.split_at_mut(nq);
        let (dk, dv) = rest.split_at_mut(nk);
        let units: Vec<Mutex<_>> = dq
            .chunks_mut(ql * w)
            .zip(dk.chunks_mut(l * w))
            .zip(dv.chunks_mut(l * w))
            .map(|((q, k), v)| Mutex::new((q, k, v)))
            .collect();
        per_sequence(units.len(), |b| {
            let mut unit = units[b].lock().expect("one worker per sequence");
            let (dq, dk, dv) = &mut *unit;
            let scratch = if a.dropout.is_some() { ql * l } else { 0 };
            let (mut factors, mut dropped) = (vec![0.0; scratch], vec![0.0; scratch]);
            let mut ds = vec![0.0; ql * l];
            for h in 0..a.heads {
                let first_row = (b * a.heads + h) * ql;
                let p = &self.probs[first_row * l..(first_row + ql) * l];
                let dc = a.head(grad, ql, b, h);
                // dP̃ = dC·Vᵀ, then back through dropout and the softmax.
                matmul(&mut ds, dc, a.head(v, l, b, h).t(), 1.0, Write::Set, 1);
                let dropped = match a.drop_out(first_row, p, &mut factors, &mut dropped) {
                    Some((factors, dropped)) => {
                        kernels::scale_by(&mut ds, factors);
                        dropped
                    }
                    None => p,
                };
                kernels::softmax_grad_rows(&mut ds, p, l, a.scale);
                let cols = h * a.head_dim;
                let dropped = Mat::rows(dropped, ql, l);
                matmul_rows(&mut dv[cols..], w, dropped.t(), dc, 1.0, Write::Set, 1);
                let ds = Mat::rows(&ds, ql, l);
                matmul_rows(
                    &mut dq[cols..],
                    w,
                    ds,
                    a.head(k, l, b, h),
                    1.0,
                    Write::Set,
                    1,
                );
                matmul_rows(
                    &mut dk[cols..],
                    w,
                    ds.t(),
                    a.head(q, ql, b, h),
                    1.0,
                    Write::Set,
                    1,
                );
            }
        });
        drop(units);
        Ok((CpuStorage::F32(packed), Shape::from(nq + 2 * nk)))
    }
}

/// Runs `work(b)` for every sequence `b < count` on candle's worker threads.
fn per_sequence(count: usize, work: impl Fn(usize) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(count, |range| range.for_each(&work));
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_close, random};
    use super::*;
    use candle_core::{D, Var};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn fused_attention_matches_the_composed_ops_and_their_gradients() {
        let mut rng = StdRng::seed_from_u64(31);
        // (sequences, keys per sequence, queries per sequence, heads, head width, dropout)
        for (b, l, ql, h, dh, p) in [
            (1, 3, 3, 1, 2, 0.0),
            (2, 5, 5, 3, 4, 0.0),
            (3, 17, 17, 4, 8, 0.2),
            (3, 17, 1, 4, 8, 0.2),
            (2, 5, 2, 3, 4, 0.0),
        ] {
            let (n, nq) = (b * l, b * ql);
            let make = |rows: usize, rng: &mut StdRng| {
                Var::from_tensor(&random(&[rows, h * dh], 0.0, 1.0, rng)).unwrap()
            };
            let (q, k, v) = (make(nq, &mut rng), make(n, &mut rng), make(n, &mut rng));
            // Every other sequence ends in padding; the first key is always real.
            let mask: Vec<f32> = (0..b)
                .flat_map(|i| {
                    (0..l).map(move |j| {
                        if i % 2 == 1 && j > 0 && j + 2 >= l {
                            -1e9
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (b, 1, 1, l), &candle_core::Device::Cpu).unwrap();
            let scale = 1.0 / (dh as f32).sqrt();
            let dropout = (p > 0.0).then(|| Dropout::new(p, &mut rng));
            // The composed reference applies the same dropout factors as a tensor.
            let factors = {
                let mut f = vec![0.0; b * h * ql * l];
                for (row, chunk) in f.chunks_exact_mut(l).enumerate() {
                    match &dropout {
                        Some(d) => d.write_mask(row * l, chunk),
                        None => chunk.fill(1.0),
                    }
                }
                Tensor::from_vec(f, (b, h, ql, l), &candle_core::Device::Cpu).unwrap()
            };
            let op = Attention {
                batch: b,
                seq: l,
                queries: ql,
                heads: h,
                head_dim: dh,
                scale,
                mask: mask.clone(),
                dropout,
                saved: Mutex::new(None),
                keep: true,
            };
            let fused = q
                .as_tensor()
                .apply_op3(k.as_tensor(), v.as_tensor(), op)
                .unwrap();
            let split = |t: &Tensor, rows: usize| {
                t.reshape((b, rows, h, dh))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (qs, ks, vs) = (
                split(q.as_tensor(), ql),
                split(k.as_tensor(), l),
                split(v.as_tensor(), l),
            );
            let scores = (qs.matmul(&ks.t().unwrap()).unwrap() * scale as f64).unwrap();
            let probs =
                candle_nn::ops::softmax(&scores.broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
            let probs = (probs * &factors).unwrap();
            let plain = probs
                .matmul(&vs)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((nq, h * dh))
                .unwrap();
            assert_close("attention", &fused, &plain, 1e-5);
            let r = random(&[nq, h * dh], 0.0, 1.0, &mut rng);
            let g_fused = (&fused * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_plain = (&plain * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (what, var) in [("q", &q), ("k", &k), ("v", &v)] {
                assert_close(
                    &format!("attention {what} gradient"),
                    g_fused.get(var.as_tensor()).unwrap(),
                    g_plain.get(var.as_tensor()).unwrap(),
                    1e-4,
                );
            }
        }
    }
}
