//! `lightpeft device-check`: whether a device computes what the CPU computes, and how fast its
//! training steps are, at any model's shapes. `bench/gpu_check.sh` runs both on a GPU machine;
//! on the CPU the parity check compares the composed ops a GPU runs against the fused kernels.

use std::path::Path;

use lightpeft_engine::bench::{self, StepProbe};
use lightpeft_pipeline::DeviceChoice;
use lightpeft_pipeline::recipe::peak_rss_mib;
use serde::Serialize;

use crate::error::{Error, Result};

/// Largest |Δ| of a logit the parity check accepts.
pub const LOGITS_LIMIT: f64 = 1e-4;
/// Largest ‖Δg‖ / ‖g‖ of a trainable variable's gradient the parity check accepts.
pub const GRADIENT_LIMIT: f64 = 1e-3;

/// What `device-check parity` found.
#[derive(Debug, Serialize)]
pub struct ParityReport {
    /// The device compared with the CPU's fused kernels.
    pub device: String,
    /// Examples × tokens of the checked batch.
    pub batch: usize,
    /// Tokens per example.
    pub len: usize,
    /// The checked step's loss, CPU then device.
    pub loss: (f32, f32),
    /// Largest |Δ| of the logits.
    pub logits_max_abs: f64,
    /// Largest |Δ| of the module importance ratios.
    pub ratios_max_abs: f64,
    /// The variable with the largest relative gradient error, and that error.
    pub worst_gradient: (String, f64),
    /// Trainable variables compared.
    pub gradients: usize,
    /// Every variable: (name, relative error, ‖g_cpu‖).
    pub per_variable: Vec<(String, f64, f64)>,
    /// Logits within [`LOGITS_LIMIT`] and every gradient within [`GRADIENT_LIMIT`].
    pub within_limits: bool,
}

impl ParityReport {
    /// One paragraph for a terminal.
    pub fn text(&self) -> String {
        format!(
            "parity on {} ({} x {} tokens, an estimation step after one AdamW update):\n\
             loss cpu {:.6} / device {:.6}\n\
             logits max |diff| {:.3e} (limit {LOGITS_LIMIT:.0e})\n\
             importance ratios max |diff| {:.3e}\n\
             gradients: {} variables, worst relative error {:.3e} in {} (limit {GRADIENT_LIMIT:.0e})\n\
             {}",
            self.device,
            self.batch,
            self.len,
            self.loss.0,
            self.loss.1,
            self.logits_max_abs,
            self.ratios_max_abs,
            self.gradients,
            self.worst_gradient.1,
            self.worst_gradient.0,
            if self.within_limits {
                "within limits"
            } else {
                "OUTSIDE LIMITS"
            }
        )
    }
}

/// Two estimation steps on the CPU and on `device`, compared (see `bench::parity`).
pub fn parity(
    model_dir: &Path,
    batch: usize,
    len: usize,
    device: DeviceChoice,
) -> Result<ParityReport> {
    let parity = bench::parity(model_dir, batch, len, &device.device()?)?;
    let worst = parity
        .worst_gradient()
        .map(|(name, relative, _)| (name.clone(), *relative))
        .unwrap_or_default();
    let within_limits = parity.logits_max_abs <= LOGITS_LIMIT
        && parity.gradients.iter().all(|g| g.1 <= GRADIENT_LIMIT);
    Ok(ParityReport {
        device: match device {
            DeviceChoice::Cpu => "cpu (composed ops)".into(),
            other => other.to_string(),
        },
        batch,
        len,
        loss: parity.loss,
        logits_max_abs: parity.logits_max_abs,
        ratios_max_abs: parity.ratios_max_abs,
        worst_gradient: worst,
        gradients: parity.gradients.len(),
        per_variable: parity.gradients,
        within_limits,
    })
}

/// What `device-check steps` measured: one row of the step-time table.
#[derive(Debug, Serialize)]
pub struct StepReport {
    /// Always `lightpeft` (the PyTorch side writes `torch`).
    #[serde(rename = "impl")]
    pub implementation: &'static str,
    /// Where the steps ran.
    pub device: String,
    /// The pruning plan.
    pub plan: &'static str,
    /// LoRA's targets before the plan.
    pub targets: &'static str,
    /// `train` or `infer`.
    pub mode: &'static str,
    /// Examples per batch.
    pub batch: usize,
    /// Tokens per example.
    pub len: usize,
    /// Masks on (an estimation step).
    pub masks: bool,
    /// Trainable parameters after the plan.
    pub trainable: usize,
    /// Timed steps.
    pub steps: usize,
    /// Median seconds per step.
    pub median_s: f64,
    /// Fastest step, seconds.
    pub min_s: f64,
    /// Slowest step, seconds.
    pub max_s: f64,
    /// Host peak resident memory, MiB (GPU memory is read by the calling script).
    pub peak_rss_mib: Option<f64>,
}

/// Times `probe` on `device`; `progress` hears every step.
pub fn steps(
    model_dir: &Path,
    probe: &StepProbe,
    device: DeviceChoice,
    mut progress: impl FnMut(usize, f64, f32),
) -> Result<StepReport> {
    let timing = bench::time_steps(model_dir, probe, &device.device()?, &mut progress)?;
    if timing.losses.iter().any(|l| !l.is_finite()) {
        return Err(Error::Usage(format!(
            "a step's loss was not finite on {device}: {:?}",
            timing.losses
        )));
    }
    Ok(StepReport {
        implementation: "lightpeft",
        device: device.to_string(),
        plan: probe.plan.name(),
        targets: probe.targets.name(),
        mode: if probe.infer { "infer" } else { "train" },
        batch: probe.batch,
        len: probe.len,
        masks: probe.masks,
        trainable: timing.trainable,
        steps: timing.seconds.len(),
        median_s: timing.median(),
        min_s: timing.min(),
        max_s: timing.max(),
        peak_rss_mib: peak_rss_mib(),
    })
}
