//! How much memory a job will need at its peak, from shapes alone, so that a request too big
//! for the machine is refused before it allocates anything (a failed allocation aborts the
//! whole process, every other job with it).
//!
//! The coefficients are fitted to the peak resident memory of real runs (`lightpeft estimate`
//! on all-MiniLM-L6-v2 and on random models of other widths and depths, batch 8–128, 64–512
//! tokens) and rounded up, so the estimate stays above what was measured (by 1.1–1.5×):
//! * training keeps about `28·hidden + 9·ffn` floats per token and layer for the backward
//!   pass, plus `40·hidden` per token outside the layers, plus 1.25 floats per attention score;
//! * evaluation keeps only one layer's working set, about `4·hidden + ffn` floats per token
//!   plus 1.25 floats per attention score;
//! * the weights are held twice while a model loads; every trainable parameter carries its
//!   value, gradient and two AdamW moments.

use serde::{Deserialize, Serialize};

const F32: u64 = 4;
const MIB: u64 = 1 << 20;
/// Allocator, tokenizer and runtime, measured at about 60 MiB.
const FIXED: u64 = 64 * MIB;

/// What the estimate reads: the model's unpruned shape and the run's batch geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryInputs {
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads per layer (the widest layer's).
    pub heads: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// FFN neurons per layer (the widest layer's).
    pub intermediate_size: usize,
    /// Parameters of the encoder, embeddings included.
    pub encoder_params: usize,
    /// The LoRA rank or the adapter width.
    pub peft_width: usize,
    /// Examples per training step (at most the training examples there are).
    pub batch: usize,
    /// Examples per evaluation batch (at most the dev examples there are).
    pub eval_batch: usize,
    /// Tokens of the longest example after truncation: every batch is padded to at most this.
    pub seq_len: usize,
}

/// The estimated peak, in bytes, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    /// Fixed overhead plus the weights (held twice while loading).
    pub weights: u64,
    /// Trainable parameters with their gradients and AdamW moments (an upper bound: every
    /// one of the six targets wrapped in every layer).
    pub optimizer: u64,
    /// What one training step keeps for its backward pass.
    pub training: u64,
    /// What one evaluation batch needs.
    pub evaluation: u64,
}

/// Which part of a run sets its peak, and so which parameters lower it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peak {
    /// A training step: lower `batch_size` or `max_len`.
    Training,
    /// An evaluation batch: lower `eval_batch_size` or `max_len`.
    Evaluation,
}

impl MemoryInputs {
    /// The estimated peak of a run with these shapes.
    pub fn estimate(&self) -> MemoryEstimate {
        let (n, h, d, f) = (
            self.layers as u64,
            self.heads as u64,
            self.hidden_size as u64,
            self.intermediate_size as u64,
        );
        let len = self.seq_len as u64;
        let scores = |batch: u64| batch * h * len * len;
        let train_tokens = self.batch as u64 * len;
        let eval_tokens = self.eval_batch as u64 * len;
        // LoRA on all six targets: r·(in + out) each, four d×d and two d×f per layer; an
        // adapter pair per layer is 2·(2·d·a + a + d). Masks and the classifier besides.
        let r = self.peft_width as u64;
        let peft = n * (r * (8 * d + 2 * (d + f))).max(2 * (2 * d * r + r + d));
        let trainable = peft + n * (h + f) + d * d + 2 * d + 16 * d;
        MemoryEstimate {
            weights: FIXED + 2 * self.encoder_params as u64 * F32,
            optimizer: 4 * trainable * F32,
            training: F32 * (train_tokens * (n * (28 * d + 9 * f) + 40 * d))
                + scores(self.batch as u64) * n * 5,
            evaluation: F32 * eval_tokens * (4 * d + f) + scores(self.eval_batch as u64) * 5,
        }
    }
}

impl MemoryEstimate {
    /// The whole estimated peak, bytes: the larger of a training step and an evaluation
    /// batch on top of the weights and optimiser state.
    pub fn total(&self) -> u64 {
        self.weights + self.optimizer + self.training.max(self.evaluation)
    }

    /// What sets the peak.
    pub fn peak(&self) -> Peak {
        if self.evaluation > self.training {
            Peak::Evaluation
        } else {
            Peak::Training
        }
    }

    /// Bytes as MiB, for messages.
    pub fn mib(bytes: u64) -> u64 {
        bytes.div_ceil(MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm(batch: usize, seq_len: usize, eval_batch: usize) -> MemoryInputs {
        MemoryInputs {
            layers: 6,
            heads: 12,
            hidden_size: 384,
            intermediate_size: 1536,
            encoder_params: 22_713_216,
            peft_width: 8,
            batch,
            eval_batch,
            seq_len,
        }
    }

    /// Peak resident memory measured with `lightpeft estimate` (2 steps, MiniLM, LoRA r=8 on
    /// the default targets, every example at least `max_len` tokens long), MiB.
    const MEASURED: [(usize, usize, f64); 7] = [
        (8, 128, 789.0),
        (32, 128, 2697.0),
        (64, 128, 5369.0),
        (128, 64, 5202.0),
        (8, 512, 3182.0),
        (16, 512, 6223.0),
        (32, 256, 5652.0),
    ];

    #[test]
    fn the_estimate_bounds_measured_peaks_closely() {
        for (batch, len, measured) in MEASURED {
            let estimate = MemoryEstimate::mib(minilm(batch, len, 64).estimate().total()) as f64;
            let ratio = estimate / measured;
            assert!(
                (1.0..1.6).contains(&ratio),
                "{batch}×{len}: estimated {estimate} MiB, measured {measured} MiB"
            );
        }
    }

    #[test]
    fn the_estimate_bounds_measured_evaluation_peaks() {
        // Two-example training steps, so the evaluation batch sets the peak.
        for (eval_batch, len, measured) in [(256, 512, 4217.0), (128, 512, 2213.0)] {
            let estimate = minilm(2, len, eval_batch).estimate();
            assert_eq!(estimate.peak(), Peak::Evaluation);
            let ratio = MemoryEstimate::mib(estimate.total()) as f64 / measured;
            assert!(
                (1.0..1.6).contains(&ratio),
                "eval {eval_batch}×{len}: {ratio}"
            );
        }
    }

    #[test]
    fn the_issue_request_is_far_over_any_machine() {
        // Batch 4096, eval batch 4096, 512 tokens: the request that aborted the process.
        let estimate = minilm(4096, 512, 4096).estimate();
        assert!(
            MemoryEstimate::mib(estimate.total()) > 1 << 20,
            "over a TiB"
        );
        assert_eq!(estimate.peak(), Peak::Training);
    }

    #[test]
    fn a_large_eval_batch_is_named_as_the_peak() {
        let estimate = minilm(1, 512, 4096).estimate();
        assert_eq!(estimate.peak(), Peak::Evaluation);
        assert!(estimate.evaluation > estimate.training);
    }

    #[test]
    fn every_part_grows_with_its_own_parameter() {
        let base = minilm(8, 128, 64).estimate();
        let bigger_batch = minilm(16, 128, 64).estimate();
        let longer = minilm(8, 256, 64).estimate();
        let bigger_eval = minilm(8, 128, 128).estimate();
        assert!(
            bigger_batch.training > base.training && bigger_batch.evaluation == base.evaluation
        );
        assert!(longer.training > 2 * base.training - base.training / 4);
        assert!(bigger_eval.evaluation > base.evaluation && bigger_eval.training == base.training);
        let wide = MemoryInputs {
            peft_width: 1024,
            ..minilm(8, 128, 64)
        }
        .estimate();
        assert!(wide.optimizer > 100 * base.optimizer / 10);
    }
}
