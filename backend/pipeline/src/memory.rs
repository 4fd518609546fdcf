//! The memory guard: a run's estimated peak (the planner's arithmetic) against a budget,
//! checked before the first step. Rust cannot recover from a failed allocation (it aborts the
//! process, and with it every other job), so a run that would not fit must be refused before
//! it allocates.

use lightpeft_api::Hyperparams;
use lightpeft_api::params::PeftKind;
use lightpeft_engine::ModelConfig;
use lightpeft_engine::plan::{MemoryEstimate, MemoryInputs, Peak};

use crate::data::{Splits, limit_examples, tokenize};
use crate::error::{Error, Result};

/// The shapes of a run of `params` on a model with `config` (`encoder_params` parameters) over
/// `splits`: batches cut to the examples there are, sequences to the longest example.
pub fn memory_inputs(
    config: &ModelConfig,
    encoder_params: usize,
    params: &Hyperparams,
    splits: &Splits,
) -> MemoryInputs {
    let longest = splits
        .train
        .encoded
        .iter()
        .chain(&splits.dev.encoded)
        .map(|e| e.ids.len())
        .max()
        .unwrap_or(0);
    MemoryInputs {
        layers: config.layers.len(),
        heads: config.layers.iter().map(|l| l.heads).max().unwrap_or(0),
        hidden_size: config.hidden_size,
        intermediate_size: config.layers.iter().map(|l| l.ffn).max().unwrap_or(0),
        encoder_params,
        peft_width: match params.peft_method {
            PeftKind::Lora => params.lora_r,
            PeftKind::Adapter => params.adapter_size,
        },
        // A multiple-choice example is one sequence per choice.
        batch: params.batch_size.min(splits.train.len()) * splits.train.choices,
        eval_batch: params.eval_batch_size.min(splits.dev.len()) * splits.dev.choices,
        seq_len: longest.min(params.max_len),
    }
}

/// Refuses a run whose estimated peak is over `budget` bytes, naming what to lower.
pub fn check_memory(inputs: &MemoryInputs, budget: u64) -> Result<MemoryEstimate> {
    let estimate = inputs.estimate();
    if estimate.total() <= budget {
        return Ok(estimate);
    }
    let (field, what) = match estimate.peak() {
        Peak::Training => (
            "batch_size",
            format!(
                "a training step of {} examples × {} tokens",
                inputs.batch, inputs.seq_len
            ),
        ),
        Peak::Evaluation => (
            "eval_batch_size",
            format!(
                "an evaluation batch of {} examples × {} tokens",
                inputs.eval_batch, inputs.seq_len
            ),
        ),
    };
    Err(Error::OverMemory {
        field,
        message: format!(
            "this run needs about {} MiB at its peak ({what}), over the memory budget of {} MiB; \
             lower {field} or max_len",
            MemoryEstimate::mib(estimate.total()),
            MemoryEstimate::mib(budget),
        ),
    })
}

/// Before anything is stored for a run: tokenises `dataset` as the run will (cut to the
/// parameters' limits) and checks the estimated peak on the model in `model_dir` against
/// `budget` bytes.
pub fn check_run_memory(
    model_dir: &std::path::Path,
    encoder_params: usize,
    dataset: lightpeft_engine::data::Dataset,
    params: &Hyperparams,
    budget: u64,
) -> Result<MemoryEstimate> {
    let files = lightpeft_engine::ModelFiles::in_dir(model_dir)?;
    let config = ModelConfig::from_file(&files.config)?;
    let splits = tokenize(&limit_examples(dataset, params), model_dir, params)?;
    check_memory(
        &memory_inputs(&config, encoder_params, params, &splits),
        budget,
    )
}

/// A safe default budget: three quarters of the memory this process may use (the machine's,
/// or its cgroup's limit when lower), or `None` where neither can be read.
pub fn machine_memory_budget() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
    // cgroup v2 writes `max` when unlimited, which does not parse and is ignored.
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let limit = match (total, cgroup) {
        (Some(t), Some(c)) => t.min(c),
        (t, c) => t.or(c)?,
    };
    Some(limit / 4 * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(batch: usize) -> MemoryInputs {
        MemoryInputs {
            layers: 6,
            heads: 12,
            hidden_size: 384,
            intermediate_size: 1536,
            encoder_params: 22_713_216,
            peft_width: 8,
            batch,
            eval_batch: 64,
            seq_len: 128,
        }
    }

    #[test]
    fn over_budget_names_the_parameter_and_both_sizes() {
        let err = check_memory(&inputs(4096), 1 << 30).unwrap_err();
        let Error::OverMemory { field, message } = &err else {
            panic!("{err}")
        };
        assert_eq!(*field, "batch_size");
        assert!(message.contains("4096 examples × 128 tokens"), "{message}");
        assert!(message.contains("budget of 1024 MiB"), "{message}");
        let fits = check_memory(&inputs(8), 1 << 30).unwrap();
        assert!(fits.total() <= 1 << 30);
    }

    #[test]
    fn the_machine_budget_is_below_the_machine() {
        if let Some(budget) = machine_memory_budget() {
            assert!(budget > 0);
            let text = std::fs::read_to_string("/proc/meminfo").unwrap();
            let kib: u64 = text
                .lines()
                .next()
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            assert!(budget < kib * 1024);
        }
    }
}
