//! AdamW with parameter groups, global-norm clipping and Hugging Face's linear schedule
//! (light-peft-spec §3.5, §6, §12), written out so every constant matches the reference.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::Result;

/// Variables that share a learning-rate multiplier and a weight decay.
pub struct ParamGroup {
    /// The variables.
    pub vars: Vec<Var>,
    /// Multiplies the scheduled learning rate (the reference's mask lr coefficients).
    pub lr_scale: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

struct Slot {
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// `torch.optim.AdamW` (β = 0.9/0.999, ε = 1e-8) over several groups.
pub struct AdamW {
    groups: Vec<(f64, f64, Vec<Slot>)>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    steps: i32,
}

impl AdamW {
    /// An optimiser with zeroed moments.
    pub fn new(groups: Vec<ParamGroup>) -> Result<Self> {
        let groups = groups
            .into_iter()
            .map(|g| {
                let slots = g
                    .vars
                    .into_iter()
                    .map(|var| {
                        Ok(Slot {
                            m: var.zeros_like()?,
                            v: var.zeros_like()?,
                            var,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((g.lr_scale, g.weight_decay, slots))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            groups,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            steps: 0,
        })
    }

    /// Every variable under optimisation.
    pub fn vars(&self) -> impl Iterator<Item = &Var> + Clone {
        self.groups
            .iter()
            .flat_map(|(_, _, s)| s.iter().map(|s| &s.var))
    }

    /// Updates taken so far and each variable's first and second moments, in [`AdamW::vars`]
    /// order: what a checkpoint needs to continue exactly.
    pub fn state(&self) -> (i32, Vec<(Tensor, Tensor)>) {
        let moments = self
            .groups
            .iter()
            .flat_map(|(_, _, s)| s.iter().map(|s| (s.m.clone(), s.v.clone())))
            .collect();
        (self.steps, moments)
    }

    /// Puts back what [`AdamW::state`] returned.
    pub fn restore(&mut self, steps: i32, moments: Vec<(Tensor, Tensor)>) -> Result<()> {
        let slots: Vec<&mut Slot> = self
            .groups
            .iter_mut()
            .flat_map(|(_, _, s)| s.iter_mut())
            .collect();
        if slots.len() != moments.len() {
            return Err(crate::error::invalid(
                "optimizer state",
                format!("{} moments for {} variables", moments.len(), slots.len()),
            ));
        }
        for (slot, (m, v)) in slots.into_iter().zip(moments) {
            if m.dims() != slot.var.dims() || v.dims() != slot.var.dims() {
                return Err(crate::error::invalid(
                    "optimizer state",
                    format!(
                        "moment shape {:?} for a {:?} variable",
                        m.dims(),
                        slot.var.dims()
                    ),
                ));
            }
            slot.m = m;
            slot.v = v;
        }
        self.steps = steps;
        Ok(())
    }

    /// One update at learning rate `lr`; variables without a gradient are left alone
    /// (as PyTorch skips parameters whose `.grad` is None).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let bias1 = 1.0 - self.beta1.powi(self.steps);
        let bias2 = 1.0 - self.beta2.powi(self.steps);
        for (lr_scale, weight_decay, slots) in &mut self.groups {
            let lr = lr * *lr_scale;
            for slot in slots.iter_mut() {
                let Some(g) = grads.get(slot.var.as_tensor()) else {
                    continue;
                };
                // candle can hand a gradient back still attached to a graph (a mask's L1 term
                // differentiates |m| through a comparison); the moments outlive the step, and
                // built from an attached gradient they would keep every step's graph alive.
                let g = &g.detach();
                let mut theta = slot.var.as_tensor().clone();
                if *weight_decay != 0.0 {
                    theta = (theta * (1.0 - lr * *weight_decay))?;
                }
                slot.m = ((&slot.m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
                slot.v = ((&slot.v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
                let denom = ((slot.v.sqrt()? / bias2.sqrt())? + self.eps)?;
                let update = ((&slot.m / denom)? * (lr / bias1))?;
                slot.var.set(&(theta - update)?)?;
            }
        }
        Ok(())
    }
}

/// Scales all gradients of `vars` so their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does; returns the norm before clipping.
pub fn clip_grad_norm<'a>(
    grads: &mut GradStore,
    vars: impl Iterator<Item = &'a Var> + Clone,
    max_norm: f64,
) -> Result<f64> {
    let mut total = 0f64;
    for var in vars.clone() {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = total.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for var in vars {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g * coef)?);
            }
        }
    }
    Ok(norm)
}

/// Hugging Face's `get_linear_schedule_with_warmup`: linear warm-up to `base_lr`, then linear
/// decay to 0 at `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearSchedule {
    /// Peak learning rate.
    pub base_lr: f64,
    /// Warm-up steps.
    pub warmup_steps: usize,
    /// Steps of the whole run.
    pub total_steps: usize,
}

impl LinearSchedule {
    /// A schedule whose warm-up is `ceil(ratio · total)` steps, as HF computes `warmup_ratio`.
    pub fn with_warmup_ratio(base_lr: f64, warmup_ratio: f64, total_steps: usize) -> Self {
        LinearSchedule {
            base_lr,
            warmup_steps: (warmup_ratio * total_steps as f64).ceil() as usize,
            total_steps,
        }
    }

    /// The learning rate used by optimiser step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        let factor = if step < self.warmup_steps {
            step as f64 / self.warmup_steps.max(1) as f64
        } else {
            let left = self.total_steps.saturating_sub(step) as f64;
            left / self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64
        };
        self.base_lr * factor.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_matches_hugging_face() {
        let s = LinearSchedule {
            base_lr: 3e-4,
            warmup_steps: 0,
            total_steps: 800,
        };
        assert_eq!(s.lr(0), 3e-4);
        assert!((s.lr(400) - 1.5e-4).abs() < 1e-12);
        assert!((s.lr(799) - 3e-4 / 800.0).abs() < 1e-12);
        assert_eq!(s.lr(800), 0.0);
        let w = LinearSchedule::with_warmup_ratio(1.0, 0.06, 100);
        assert_eq!(w.warmup_steps, 6);
        assert_eq!((w.lr(0), w.lr(3), w.lr(6)), (0.0, 0.5, 1.0));
        assert!((w.lr(53) - 0.5).abs() < 1e-12);
    }

    /// The gradient of Σ|m| comes back from candle attached to a graph (through the
    /// comparison in |m|'s derivative); the moments built from it must not be, or each step's
    /// graph would stay alive through them for the rest of the run.
    #[test]
    fn moments_hold_no_graph_even_from_an_attached_gradient() {
        let dev = Device::Cpu;
        let m = Var::new(&[1.0f32, -0.5, 2.0], &dev).unwrap();
        let mut opt = AdamW::new(vec![ParamGroup {
            vars: vec![m.clone()],
            lr_scale: 1.0,
            weight_decay: 0.0,
        }])
        .unwrap();
        for _ in 0..3 {
            let grads = m
                .as_tensor()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert!(
                grads.get(m.as_tensor()).unwrap().track_op(),
                "candle's |m| gradient is attached (else this test checks nothing)"
            );
            opt.step(&grads, 0.1).unwrap();
            let slot = &opt.groups[0].2[0];
            assert!(!slot.m.track_op() && !slot.v.track_op());
        }
    }

    /// Two steps of AdamW on f(x) = Σx², checked against the update written out by hand.
    #[test]
    fn adamw_matches_the_torch_update() {
        let dev = Device::Cpu;
        let x = Var::new(&[1.0f32, -2.0], &dev).unwrap();
        let mut opt = AdamW::new(vec![ParamGroup {
            vars: vec![x.clone()],
            lr_scale: 2.0,
            weight_decay: 0.1,
        }])
        .unwrap();
        let (mut p, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
        for t in 1..=2 {
            let grads = x
                .as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            opt.step(&grads, 0.05).unwrap();
            let lr = 0.1;
            for i in 0..2 {
                let g = 2.0 * p[i];
                p[i] *= 1.0 - lr * 0.1;
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let mhat = m[i] / (1.0 - 0.9f64.powi(t));
                let vhat = v[i] / (1.0 - 0.999f64.powi(t));
                p[i] -= lr * mhat / (vhat.sqrt() + 1e-8);
            }
        }
        let got: Vec<f32> = x.as_tensor().to_vec1().unwrap();
        for (g, w) in got.iter().zip(p) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {p:?}");
        }
    }

    #[test]
    fn clipping_scales_to_the_max_norm_and_reports_the_raw_norm() {
        let dev = Device::Cpu;
        let a = Var::new(&[3.0f32], &dev).unwrap();
        let b = Var::new(&[4.0f32], &dev).unwrap();
        // d/dx (x²/2) = x, so the gradients are (3, 4) with norm 5.
        let loss = ((a.as_tensor().sqr().unwrap() + b.as_tensor().sqr().unwrap()).unwrap() * 0.5)
            .unwrap()
            .sum_all()
            .unwrap();
        let mut grads = loss.backward().unwrap();
        let norm = clip_grad_norm(&mut grads, [&a, &b].into_iter(), 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let ga = grads.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((ga - 0.6).abs() < 1e-5 && (gb - 0.8).abs() < 1e-5);
        let mut grads = loss.backward().unwrap();
        clip_grad_norm(&mut grads, [&a, &b].into_iter(), 10.0).unwrap();
        assert_eq!(
            grads.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0],
            3.0
        );
    }
}
