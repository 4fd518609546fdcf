//! The CLI's observer: a progress bar with rate and ETA on stderr, and every record appended
//! as a JSON line to the run's folder.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use lightpeft_engine::train::{EvalRecord, Observer, StepRecord};
use lightpeft_pipeline::Reporter;

use crate::error::{Error, Result};

/// Draws progress and writes `steps.jsonl` / `evals.jsonl`.
pub struct CliObserver {
    bar: ProgressBar,
    steps: BufWriter<File>,
    evals: BufWriter<File>,
    last_eval: String,
    write_error: Option<std::io::Error>,
}

impl CliObserver {
    /// Appends to the record files in `dir`; `label` prefixes the bar.
    pub fn new(dir: &Path, label: &str, quiet: bool) -> Result<Self> {
        let open = |name: &str| -> Result<BufWriter<File>> {
            let path = dir.join(name);
            File::options()
                .create(true)
                .append(true)
                .open(&path)
                .map(BufWriter::new)
                .map_err(|e| Error::file(path, e))
        };
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:28}] {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Ok(CliObserver {
            bar,
            steps: open("steps.jsonl")?,
            evals: open("evals.jsonl")?,
            last_eval: String::new(),
            write_error: None,
        })
    }

    /// Finishes the bar and flushes the files, reporting the first write error.
    pub fn finish(mut self) -> Result<()> {
        self.bar.finish();
        for w in [&mut self.steps, &mut self.evals] {
            if let Err(e) = w.flush() {
                self.write_error.get_or_insert(e);
            }
        }
        match self.write_error {
            Some(e) => Err(Error::Usage(format!(
                "could not write the run's records: {e}"
            ))),
            None => Ok(()),
        }
    }

    fn write(&mut self, line: String, evals: bool) {
        let w = if evals {
            &mut self.evals
        } else {
            &mut self.steps
        };
        if let Err(e) = writeln!(w, "{line}") {
            self.write_error.get_or_insert(e);
        }
    }
}

impl Observer for CliObserver {
    fn on_step(&mut self, record: &StepRecord) {
        self.bar.set_length(record.total_steps as u64);
        self.bar.set_position(record.step as u64 + 1);
        self.bar.set_message(format!(
            "loss {:.4}  lr {:.2e}{}",
            record.ce_loss, record.lr, self.last_eval
        ));
        let line = serde_json::to_string(record).expect("records serialise");
        self.write(line, false);
    }

    fn on_eval(&mut self, record: &EvalRecord) {
        if let Some((name, value)) = record.metrics.first() {
            self.last_eval = format!("  dev {name} {:.2} %", value * 100.0);
        }
        let line = serde_json::to_string(record).expect("records serialise");
        self.write(line, true);
        // An evaluation is a natural checkpoint for the record files.
        let _ = self.steps.flush();
        let _ = self.evals.flush();
    }
}

/// The CLI keeps no snapshots and has no bookkeeping before the first step.
impl Reporter for CliObserver {}
