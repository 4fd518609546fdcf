//! Labelled text-classification data: the task registry, loaders for the bundled datasets and
//! the published GLUE/SuperGLUE files, official metrics, and the per-epoch batch order.
//!
//! Everything here is plain Rust data; callers tokenise [`Example`]s with
//! [`TextEncoder`](crate::tokenize::TextEncoder).
//!
//! Splits never depend on file order (the VADER file is sorted by label): VADER splits on its id,
//! BIG-bench on a hash of each example's text (see *Splits*). Every row a loader does not
//! turn into an example is either an error naming the file and line (or example), or counted in the
//! [`SkipReport`] with its reason.
//!
//! # Splits
//!
//! * `sst2-rt` (VADER movie snippets): an integer id with `id % 10 == 0` goes to dev, giving the
//!   8,244 / 929 split of assets.md §2.1. An id that is not an integer falls back to the hash rule.
//! * BIG-bench tasks have no splits: an example goes to dev when a hash of its UTF-8 `input`
//!   (64-bit FNV-1a, then MurmurHash3's `fmix64` finaliser) is `0 mod 10`, about 10%. For
//!   MultiRC the key is the paragraph, so a paragraph's questions stay on one side; with only
//!   50 paragraphs its dev share is coarser (7.5%). The rest is train; there is no test split.
//! * GLUE/SuperGLUE: the user's train and dev files, as published.
//! * The user's own CSV/TSV/JSON lines ([`load_custom`]): their train and dev files.

mod batches;
mod bigbench;
mod custom;
mod glue;
mod metric;
mod split;
mod tasks;
mod vader;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, invalid};

pub use batches::{batches, batches_by_length};
pub use custom::{
    ColumnMapping, CustomLayout, LabelKind, MAX_CLASSES, Row, Table, TableFormat, class_names,
    load_custom, read_table,
};
pub use metric::{
    Baseline, Credit, Guess, Measure, Metric, MetricValues, score, score_grouped, score_ranked,
    score_values,
};
pub use tasks::{AssetFile, TASKS, TaskFiles, TaskId, TaskInputs, TaskSpec};

use tasks::Layout;

/// What a task's model predicts, which decides its head, loss and predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Objective {
    /// One of the task's labels: one head output per label, cross-entropy, the arg-max predicted.
    Classification,
    /// A number (STS-B's similarity): one head output, mean squared error, the output predicted
    /// (the reference's rule for `num_labels == 1`).
    Regression,
    /// Which of an example's choices is right (COPA): each (text, choice) pair gets one head
    /// output, cross-entropy over an example's choices, the arg-max choice predicted.
    MultipleChoice,
}

impl Objective {
    /// Outputs of the classification head for a task with `labels` labels.
    pub fn head_outputs(self, labels: usize) -> usize {
        match self {
            Objective::Classification => labels,
            Objective::Regression | Objective::MultipleChoice => 1,
        }
    }
}

/// One labelled example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Where the example came from: VADER's own id, `<file> line <n>` for GLUE/SuperGLUE files
    /// (1-based), `<task> example <i>` for BIG-bench (0-based index in `examples`).
    pub id: String,
    /// The first (or only) text.
    pub text_a: String,
    /// The second text of a pair task.
    pub text_b: Option<String>,
    /// Index into [`Dataset::labels`]: the class, or for multiple choice the right choice.
    /// 0 for regression.
    pub label: usize,
    /// The gold number of a regression task (STS-B's similarity, 0–5); `None` elsewhere.
    pub value: Option<f32>,
    /// The candidate second texts of a multiple-choice task, each paired with `text_a` (COPA's
    /// two alternatives); empty elsewhere.
    pub choices: Vec<String>,
    /// The question an answer belongs to (SuperGLUE MultiRC and ReCoRD): MultiRC's exact match
    /// counts a question right when every one of its answers is; ReCoRD scores the top-ranked
    /// candidate of each query. `None` elsewhere.
    pub group: Option<u32>,
    /// What predicting this candidate earns against its query's gold answers (ReCoRD's
    /// candidate entities); `None` elsewhere.
    pub credit: Option<Credit>,
}

impl Example {
    /// A classification example with no group.
    pub fn labelled(id: String, text_a: String, text_b: Option<String>, label: usize) -> Self {
        Example {
            id,
            text_a,
            text_b,
            label,
            value: None,
            choices: Vec::new(),
            group: None,
            credit: None,
        }
    }
}

/// A task's train and dev examples, with what was left out and how to score it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Training examples.
    pub train: Vec<Example>,
    /// Evaluation examples (GLUE's `validation`; MNLI's `validation_matched`).
    pub dev: Vec<Example>,
    /// Label names; an example's `label` indexes this (the choices' names for multiple
    /// choice; empty for regression).
    pub labels: Vec<String>,
    /// What the model predicts.
    pub objective: Objective,
    /// The task's official metric.
    pub metric: Metric,
    /// Rows that were read but deliberately not turned into examples.
    pub skipped: SkipReport,
}

impl Dataset {
    /// Always predicting the most frequent train label, scored on dev with the task's metric, so
    /// every reported number can be shown beside what a constant guess gets.
    pub fn majority_baseline(&self) -> Result<Baseline> {
        metric::majority_baseline(&self.train, &self.dev, self.labels.len(), self.metric)
    }

    /// Outputs of the classification head this dataset trains.
    pub fn head_outputs(&self) -> usize {
        self.objective.head_outputs(self.labels.len())
    }
}

/// How many examples carry each label, for labels `0..num_labels`.
///
/// Labels at or above `num_labels` are not counted.
pub fn label_counts(examples: &[Example], num_labels: usize) -> Vec<usize> {
    let mut counts = vec![0; num_labels];
    for example in examples {
        if let Some(count) = counts.get_mut(example.label) {
            *count += 1;
        }
    }
    counts
}

/// Reads a task's train and dev examples.
///
/// `files` must match [`TaskSpec::inputs`]: the asset paths in the listed order for the bundled
/// tasks, or the user's train and dev files for GLUE/SuperGLUE.
pub fn load_task(spec: &TaskSpec, files: &TaskFiles) -> Result<Dataset> {
    let mut skipped = SkipReport::default();
    let (train, dev) = match (&spec.layout, files) {
        (Layout::Vader, TaskFiles::Assets(paths)) => {
            let [path] = asset_paths(spec, paths)?;
            vader::load(path, &mut skipped)?
        }
        (Layout::BigBench(format), TaskFiles::Assets(paths)) => {
            let [path] = asset_paths(spec, paths)?;
            bigbench::load(path, format, spec.labels)?
        }
        (Layout::MultircNi, TaskFiles::Assets(paths)) => {
            bigbench::load_multirc(asset_paths(spec, paths)?, &mut skipped)?
        }
        (Layout::Tsv(layout), TaskFiles::TrainDev { train, dev }) => (
            glue::load_tsv(train, "train", layout, spec.labels, &mut skipped)?,
            glue::load_tsv(dev, "dev", layout, spec.labels, &mut skipped)?,
        ),
        (Layout::Jsonl(layout), TaskFiles::TrainDev { train, dev }) => (
            glue::load_jsonl(train, "train", layout, spec.labels)?,
            glue::load_jsonl(dev, "dev", layout, spec.labels)?,
        ),
        (Layout::MultircJsonl, TaskFiles::TrainDev { train, dev }) => (
            glue::load_multirc(train, "train")?,
            glue::load_multirc(dev, "dev")?,
        ),
        (Layout::RecordJsonl, TaskFiles::TrainDev { train, dev }) => (
            glue::load_record(train, "train", &mut skipped)?,
            glue::load_record(dev, "dev", &mut skipped)?,
        ),
        (_, TaskFiles::Assets(_)) => {
            return Err(invalid(
                "task files",
                format!("{} reads the user's train and dev files", spec.name),
            ));
        }
        (_, TaskFiles::TrainDev { .. }) => {
            return Err(invalid(
                "task files",
                format!(
                    "{} reads lightpeft's own data files, not user files",
                    spec.name
                ),
            ));
        }
    };
    Ok(Dataset {
        train,
        dev,
        labels: spec.labels.iter().map(|label| label.to_string()).collect(),
        objective: spec.objective,
        metric: spec.metric,
        skipped,
    })
}

/// Where in a file a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A 1-based line of a text file.
    Line(usize),
    /// A 0-based index into a BIG-bench file's `examples`.
    Example(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "line {line}"),
            Location::Example(index) => write!(f, "example {index}"),
        }
    }
}

/// Rows read but not turned into examples, grouped by file and reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipReport {
    /// One group per (file, reason), in the order first met.
    pub groups: Vec<Skipped>,
}

/// The rows of one file skipped for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why these rows were left out.
    pub reason: &'static str,
    /// Where each skipped row is.
    pub at: Vec<Location>,
}

impl SkipReport {
    /// How many rows were skipped in all.
    pub fn total(&self) -> usize {
        self.groups.iter().map(|group| group.at.len()).sum()
    }

    /// Records one skipped row.
    fn record(&mut self, path: &Path, reason: &'static str, at: Location) {
        match self
            .groups
            .iter_mut()
            .find(|group| group.reason == reason && group.path == path)
        {
            Some(group) => group.at.push(at),
            None => self.groups.push(Skipped {
                path: path.to_path_buf(),
                reason,
                at: vec![at],
            }),
        }
    }
}

/// How many skipped locations a report prints per group before eliding the rest.
const SHOWN_LOCATIONS: usize = 5;

impl fmt::Display for SkipReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for group in &self.groups {
            let shown: Vec<String> = group
                .at
                .iter()
                .take(SHOWN_LOCATIONS)
                .map(Location::to_string)
                .collect();
            let more = if group.at.len() > SHOWN_LOCATIONS {
                ", …"
            } else {
                ""
            };
            writeln!(
                f,
                "{}: skipped {} row(s): {} ({}{more})",
                group.path.display(),
                group.at.len(),
                group.reason,
                shown.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The asset paths, checked to be as many as the task reads.
fn asset_paths<'a, const N: usize>(
    spec: &TaskSpec,
    paths: &'a [PathBuf],
) -> Result<&'a [PathBuf; N]> {
    paths.try_into().map_err(|_| {
        invalid(
            "task files",
            format!("{} needs {N} file(s), got {}", spec.name, paths.len()),
        )
    })
}

/// A split with no examples can be neither trained nor scored; say so while the file is known.
fn require_examples(examples: &[Example], split: &str, path: &Path) -> Result<()> {
    if examples.is_empty() {
        return Err(data_error(path, None, format!("no {split} examples")));
    }
    Ok(())
}

/// Reads a dataset file as UTF-8 text.
fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The file's lines with their 1-based numbers, without line ends, a leading byte-order mark or
/// empty lines (which hold no example, so nothing is lost).
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !line.is_empty())
}

/// An [`Error::Data`] at a line.
fn data_error(path: &Path, line: Option<usize>, message: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(label: usize) -> Example {
        Example::labelled(String::new(), "a".into(), None, label)
    }

    #[test]
    fn label_counts_ignore_labels_out_of_range() {
        let examples: Vec<Example> = [0, 1, 1, 2, 5].into_iter().map(example).collect();
        assert_eq!(label_counts(&examples, 3), vec![1, 2, 1]);
    }

    #[test]
    fn skip_report_groups_by_file_and_reason_and_elides_long_lists() {
        let mut report = SkipReport::default();
        for line in 1..=7 {
            report.record(Path::new("a.tsv"), "broken", Location::Line(line));
        }
        report.record(Path::new("b.tsv"), "broken", Location::Line(3));
        report.record(Path::new("a.tsv"), "other", Location::Example(0));
        assert_eq!(report.groups.len(), 3);
        assert_eq!(report.total(), 9);
        let text = report.to_string();
        assert!(
            text.contains(
                "a.tsv: skipped 7 row(s): broken (line 1, line 2, line 3, line 4, line 5, …)"
            ),
            "{text}"
        );
        assert!(
            text.contains("a.tsv: skipped 1 row(s): other (example 0)"),
            "{text}"
        );
    }

    #[test]
    fn numbered_lines_drop_bom_line_ends_and_empty_lines() {
        let lines: Vec<_> = numbered_lines("\u{feff}a\tb\r\n\r\nc\r\n").collect();
        assert_eq!(lines, vec![(1, "a\tb"), (3, "c")]);
    }

    #[test]
    fn data_errors_read_like_compiler_messages() {
        let error = data_error(Path::new("dev.tsv"), Some(12), "bad label");
        assert_eq!(error.to_string(), "dev.tsv:12: bad label");
        let error = data_error(Path::new("dev.tsv"), None, "no dev examples");
        assert_eq!(error.to_string(), "dev.tsv: no dev examples");
    }
}
