//! `lightpeft bench`: Light-PEFT against vanilla PEFT and random pruning, side by side on the
//! same data and recipe. Each configuration runs in its own `lightpeft` process, so that its
//! peak memory is its own; all of them run in one invocation on one machine.

use std::path::Path;
use std::process::Command;

use lightpeft_api::{ALL_TARGETS, Hyperparams, PARAMS};
use lightpeft_pipeline::DeviceChoice;

use crate::commands::RunResult;
use crate::error::{Error, Result};

/// One row of the comparison.
struct Config {
    name: &'static str,
    kind: Kind,
}

enum Kind {
    Baseline { targets: &'static str },
    LightPeft { ratios: [f64; 4], random: bool },
}

const PAPER: [f64; 4] = [0.333333333, 0.333333333, 0.75, 0.5];
const HALF: [f64; 4] = [0.5, 0.5, 0.75, 0.5];

const CONFIGS: [Config; 6] = [
    Config {
        name: "vanilla LoRA q,v",
        kind: Kind::Baseline {
            targets: "query,value",
        },
    },
    Config {
        name: "vanilla LoRA, 6 targets",
        kind: Kind::Baseline {
            targets: ALL_TARGETS,
        },
    },
    Config {
        name: "Light-PEFT .33/.33/.75/.5",
        kind: Kind::LightPeft {
            ratios: PAPER,
            random: false,
        },
    },
    Config {
        name: "Light-PEFT .5/.5/.75/.5",
        kind: Kind::LightPeft {
            ratios: HALF,
            random: false,
        },
    },
    Config {
        name: "random .33/.33/.75/.5",
        kind: Kind::LightPeft {
            ratios: PAPER,
            random: true,
        },
    },
    Config {
        name: "random .5/.5/.75/.5",
        kind: Kind::LightPeft {
            ratios: HALF,
            random: true,
        },
    },
];

/// Every parameter as `--flag value` pairs.
fn flags(params: &Hyperparams) -> Vec<String> {
    PARAMS
        .iter()
        .flat_map(|spec| {
            let value = params.get(spec.name).expect("listed");
            // An empty optional seed means "none": leave the flag out.
            (!value.is_empty()).then(|| [format!("--{}", spec.name.replace('_', "-")), value])
        })
        .flatten()
        .collect()
}

fn run_self(data_dir: &Path, args: &[String]) -> Result<String> {
    let exe =
        std::env::current_exe().map_err(|e| Error::Usage(format!("cannot find lightpeft: {e}")))?;
    eprintln!("bench: lightpeft {}", args.join(" "));
    let out = Command::new(exe)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .arg("--json")
        .output()
        .map_err(|e| Error::Usage(format!("cannot run lightpeft: {e}")))?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "`lightpeft {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn parse_result(json: &str) -> Result<RunResult> {
    serde_json::from_str(json).map_err(|e| Error::Usage(format!("unreadable result: {e}")))
}

/// Runs every configuration and returns the table (markdown).
pub fn bench(
    data_dir: &Path,
    task: &str,
    prefix: &str,
    params: &Hyperparams,
    device: DeviceChoice,
) -> Result<String> {
    let base: Vec<String> = vec![
        "--task".into(),
        task.into(),
        "--device".into(),
        device.to_string(),
    ];
    let mut estimate = vec![
        "estimate".into(),
        "--run".into(),
        format!("{prefix}-estimate"),
    ];
    estimate.extend(base.iter().cloned());
    estimate.extend(flags(params));
    run_self(data_dir, &estimate)?;
    let mut rows = Vec::new();
    for (i, config) in CONFIGS.iter().enumerate() {
        let mut p = params.clone();
        let args = match config.kind {
            Kind::Baseline { targets } => {
                p.targets = lightpeft_api::Targets::parse(targets).map_err(Error::Usage)?;
                let mut a = vec![
                    "baseline".into(),
                    "--run".into(),
                    format!("{prefix}-baseline-{i}"),
                ];
                a.extend(base.iter().cloned());
                a
            }
            Kind::LightPeft { ratios, random } => {
                [p.head_ratio, p.ffn_ratio, p.module_ratio, p.rank_ratio] = ratios;
                p.random_seed = random.then_some(params.seed);
                vec![
                    "finetune".into(),
                    "--run".into(),
                    format!("{prefix}-estimate"),
                    "--device".into(),
                    device.to_string(),
                ]
            }
        };
        let mut args = args;
        args.extend(flags(&p));
        rows.push((config.name, parse_result(&run_self(data_dir, &args)?)?));
    }
    Ok(table(&rows))
}

fn table(rows: &[(&str, RunResult)]) -> String {
    let reference = rows
        .iter()
        .find(|(name, _)| name.contains("6 targets"))
        .map(|(_, r)| r.median_step_seconds)
        .unwrap_or(0.0);
    let mut out = String::from(
        "| configuration | dev metric (best epoch) | trainable params (PEFT + head) | frozen encoder params | median s/step | step speed-up vs vanilla 6 targets | peak RSS (MiB) |\n|---|---|---|---|---|---|---|\n",
    );
    for (name, r) in rows {
        let metric = r
            .best
            .as_ref()
            .and_then(|b| {
                b.metrics
                    .first()
                    .map(|(k, v)| format!("{k} {:.2} %", v * 100.0))
            })
            .unwrap_or_else(|| "–".into());
        let speedup = if r.median_step_seconds > 0.0 {
            reference / r.median_step_seconds
        } else {
            0.0
        };
        out.push_str(&format!(
            "| {name} | {metric} | {} | {} | {:.3} | {speedup:.2}× | {:.0} |\n",
            r.params.trainable,
            r.params.encoder,
            r.median_step_seconds,
            r.peak_rss_mib.unwrap_or(0.0)
        ));
    }
    if let Some((_, r)) = rows.first() {
        let majority = r
            .majority_baseline
            .first()
            .map(|(k, v)| format!("{k} {:.2} %", v * 100.0))
            .unwrap_or_default();
        out.push_str(&format!(
            "\nMajority-class baseline on the same dev examples: {majority}.\n"
        ));
    }
    out
}
