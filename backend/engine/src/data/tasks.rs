//! The task registry: one table saying, per task, its labels, metric, files and file layout.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::Objective;
use super::bigbench::BigBenchInput;
use super::glue::{JsonInputs, JsonlLayout, LabelCoding, TsvFields, TsvLayout};
use super::metric::Metric;
use crate::error::{Error, invalid};

/// A task lightpeft can load; [`TaskId::spec`] gives its entry in [`TASKS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskId {
    /// SST-2 proxy: VADER's Rotten Tomatoes snippets, sentiment.
    Sst2Rt,
    /// RTE-like: BIG-bench `epistemic_reasoning`.
    RteEpistemic,
    /// CB-like: BIG-bench `presuppositions_as_nli`.
    CbPresupp,
    /// MultiRC-like: BIG-bench natural_instructions subtasks 056 and 057.
    MultircNi,
    /// BoolQ-like without a passage: BIG-bench `strategyqa`.
    BoolqStrategyqa,
    /// MNLI-like: BIG-bench `vitaminc_fact_verification`.
    NliVitaminc,
    /// GLUE SST-2 files.
    GlueSst2,
    /// GLUE CoLA files.
    GlueCola,
    /// GLUE MRPC files.
    GlueMrpc,
    /// GLUE QQP files.
    GlueQqp,
    /// GLUE MNLI files (dev = `dev_matched.tsv`).
    GlueMnli,
    /// GLUE QNLI files.
    GlueQnli,
    /// GLUE RTE files.
    GlueRte,
    /// GLUE WNLI files.
    GlueWnli,
    /// SuperGLUE BoolQ files.
    SuperGlueBoolq,
    /// SuperGLUE CB files.
    SuperGlueCb,
    /// SuperGLUE RTE files.
    SuperGlueRte,
    /// SuperGLUE WiC files (word in context, as one templated sentence).
    SuperGlueWic,
    /// SuperGLUE WSC files (Winograd coreference, templated).
    SuperGlueWsc,
    /// Sentiment of VADER's crowd-rated tweets.
    SentimentTweets,
    /// Sentiment of VADER's crowd-rated Amazon review sentences.
    SentimentAmazon,
    /// Sentiment of VADER's crowd-rated New York Times editorial sentences.
    SentimentNyt,
    /// SuperGLUE MultiRC files (is this answer to a question on the passage correct).
    SuperGlueMultirc,
    /// GLUE STS-B files (sentence similarity 0–5, regression).
    GlueStsb,
    /// SuperGLUE COPA files (the more plausible cause or effect, multiple choice).
    SuperGlueCopa,
    /// SuperGLUE ReCoRD files (which passage entity fills a query's blank).
    SuperGlueRecord,
}

impl TaskId {
    /// The task's entry in [`TASKS`].
    pub fn spec(self) -> &'static TaskSpec {
        // TASKS lists the tasks in declaration order; a unit test holds it to that.
        &TASKS[self as usize]
    }

    /// The task's name, as typed on the command line.
    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskId {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        TASKS
            .iter()
            .find(|spec| spec.name == name)
            .map(|spec| spec.id)
            .ok_or_else(|| {
                let known: Vec<&str> = TASKS.iter().map(|spec| spec.name).collect();
                invalid(
                    "task",
                    format!("unknown task `{name}`; known: {}", known.join(", ")),
                )
            })
    }
}

/// What a task is and where its data comes from.
#[derive(Debug)]
pub struct TaskSpec {
    /// The task.
    pub id: TaskId,
    /// Its name, as typed on the command line.
    pub name: &'static str,
    /// One line for people choosing a task.
    pub description: &'static str,
    /// Label names; label `i` of an example is `labels[i]`. The order is fixed: for GLUE and
    /// SuperGLUE it is Hugging Face's, so label indices match models trained there.
    pub labels: &'static [&'static str],
    /// What the model predicts.
    pub objective: Objective,
    /// The official metric.
    pub metric: Metric,
    /// The files it reads.
    pub inputs: TaskInputs,
    /// How those files are laid out.
    pub(crate) layout: Layout,
}

impl TaskSpec {
    /// The number of labels.
    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }
}

/// The files a task reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskInputs {
    /// Files that `lightpeft assets fetch` puts in the data directory, in the order
    /// [`TaskFiles::Assets`] must list their paths.
    Assets(&'static [AssetFile]),
    /// The user's own train and dev files; the names are those of the published release.
    UserFiles {
        /// The published name of the training file.
        train: &'static str,
        /// The published name of the evaluation file.
        dev: &'static str,
    },
}

/// A data file fetched by the assets crate. The engine does not locate it: callers map it to a
/// path (`lightpeft_assets::vader_file`, `lightpeft_assets::bigbench_task_file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetFile {
    /// A VADER ground-truth file, named as in the files of `lightpeft_assets::VADER`.
    Vader(&'static str),
    /// A BIG-bench `task.json`, named by its task path as in `lightpeft_assets::BIGBENCH_TASKS`.
    BigBench(&'static str),
}

/// The paths [`load_task`](super::load_task) reads, matching [`TaskSpec::inputs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskFiles {
    /// The paths of the spec's [`TaskInputs::Assets`], in its order.
    Assets(Vec<PathBuf>),
    /// The user's train and dev files.
    TrainDev {
        /// The training file.
        train: PathBuf,
        /// The evaluation file.
        dev: PathBuf,
    },
}

/// How a task's files are parsed.
#[derive(Debug)]
pub(crate) enum Layout {
    /// `id \t mean_rating \t text`, split on the id.
    Vader,
    /// A BIG-bench `task.json` with `target_scores`, split on a hash of the input.
    BigBench(BigBenchInput),
    /// The two natural_instructions MultiRC files, turned into "is this answer correct?".
    MultircNi,
    /// GLUE's tab-separated files.
    Tsv(TsvLayout),
    /// SuperGLUE's JSON-lines files.
    Jsonl(JsonlLayout),
    /// SuperGLUE MultiRC's JSON lines: a passage, its questions, their answers.
    MultircJsonl,
    /// SuperGLUE ReCoRD's JSON lines: a passage with marked entities, queries, their answers.
    RecordJsonl,
}

const GLUE_FILES: TaskInputs = TaskInputs::UserFiles {
    train: "train.tsv",
    dev: "dev.tsv",
};
const SUPERGLUE_FILES: TaskInputs = TaskInputs::UserFiles {
    train: "train.jsonl",
    dev: "val.jsonl",
};
const NLI_BINARY: &[&str] = &["entailment", "not_entailment"];
/// SuperGLUE CB's order in Hugging Face `super_glue`, which differs from MNLI's.
const CB_LABELS: &[&str] = &["entailment", "contradiction", "neutral"];

/// A GLUE file with a header: columns are found by name.
const fn tsv(
    text_a: &'static str,
    text_b: Option<&'static str>,
    label: &'static str,
    coding: LabelCoding,
) -> Layout {
    Layout::Tsv(TsvLayout {
        fields: TsvFields::Header {
            text_a,
            text_b,
            label,
        },
        coding,
        broken_rows: None,
    })
}

const fn jsonl(text_a: &'static str, text_b: Option<&'static str>, coding: LabelCoding) -> Layout {
    Layout::Jsonl(JsonlLayout {
        inputs: JsonInputs::Fields { text_a, text_b },
        label: "label",
        coding,
    })
}

/// A SuperGLUE layout whose text the reference builds from a template, with a boolean label.
const fn jsonl_template(inputs: JsonInputs) -> Layout {
    Layout::Jsonl(JsonlLayout {
        inputs,
        label: "label",
        coding: LabelCoding::Bool,
    })
}

/// Every task, in [`TaskId`] order.
pub static TASKS: [TaskSpec; 26] = [
    TaskSpec {
        id: TaskId::Sst2Rt,
        name: "sst2-rt",
        description: "SST-2 proxy: Rotten Tomatoes snippets with VADER crowd sentiment (|rating| ≥ 1)",
        labels: &["negative", "positive"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: TaskInputs::Assets(&[AssetFile::Vader("movieReviewSnippets_GroundTruth.txt")]),
        layout: Layout::Vader,
    },
    TaskSpec {
        id: TaskId::RteEpistemic,
        name: "rte-epistemic",
        description: "RTE-like: does the premise entail the hypothesis about beliefs (BIG-bench epistemic_reasoning)",
        labels: &["entailment", "non-entailment"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: TaskInputs::Assets(&[AssetFile::BigBench("epistemic_reasoning")]),
        layout: Layout::BigBench(BigBenchInput::Pair {
            first: "Premise: ",
            second: " Hypothesis: ",
            end: "",
        }),
    },
    TaskSpec {
        id: TaskId::CbPresupp,
        name: "cb-presupp",
        description: "CB-like 3-way NLI on presuppositions (BIG-bench presuppositions_as_nli)",
        labels: CB_LABELS,
        objective: Objective::Classification,
        metric: Metric::AccuracyAndMacroF1,
        inputs: TaskInputs::Assets(&[AssetFile::BigBench("presuppositions_as_nli")]),
        layout: Layout::BigBench(BigBenchInput::Pair {
            first: "Sentence 1: ",
            second: "\nSentence 2: ",
            end: "\n\nThe answer is: ",
        }),
    },
    TaskSpec {
        id: TaskId::MultircNi,
        name: "multirc-ni",
        description: "MultiRC-like: is this candidate answer to a question on a paragraph correct (BIG-bench natural_instructions 056/057)",
        labels: &["False", "True"],
        objective: Objective::Classification,
        metric: Metric::F1,
        inputs: TaskInputs::Assets(&[
            AssetFile::BigBench("natural_instructions/subtask056_multirc_classify_correct_answer"),
            AssetFile::BigBench(
                "natural_instructions/subtask057_multirc_classify_incorrect_answer",
            ),
        ]),
        layout: Layout::MultircNi,
    },
    TaskSpec {
        id: TaskId::BoolqStrategyqa,
        name: "boolq-strategyqa",
        description: "BoolQ-like yes/no questions needing implicit reasoning, no passage (BIG-bench strategyqa)",
        labels: &["No", "Yes"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: TaskInputs::Assets(&[AssetFile::BigBench("strategyqa")]),
        layout: Layout::BigBench(BigBenchInput::Single),
    },
    TaskSpec {
        id: TaskId::NliVitaminc,
        name: "nli-vitaminc",
        description: "MNLI-like: does Wikipedia evidence support, refute or not decide a claim (BIG-bench vitaminc_fact_verification)",
        labels: &["True", "False", "Neither"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: TaskInputs::Assets(&[AssetFile::BigBench("vitaminc_fact_verification")]),
        layout: Layout::BigBench(BigBenchInput::Pair {
            first: "",
            second: "\nClaim: ",
            end: "",
        }),
    },
    TaskSpec {
        id: TaskId::GlueSst2,
        name: "glue-sst2",
        description: "GLUE SST-2 sentiment (your train.tsv and dev.tsv)",
        labels: &["negative", "positive"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: GLUE_FILES,
        layout: tsv("sentence", None, "label", LabelCoding::Index),
    },
    TaskSpec {
        id: TaskId::GlueCola,
        name: "glue-cola",
        description: "GLUE CoLA grammatical acceptability (your train.tsv and dev.tsv)",
        labels: &["unacceptable", "acceptable"],
        objective: Objective::Classification,
        metric: Metric::Matthews,
        inputs: GLUE_FILES,
        // The published CoLA files have no header: source, label, original label, sentence.
        layout: Layout::Tsv(TsvLayout {
            fields: TsvFields::NoHeader {
                width: 4,
                text_a: 3,
                text_b: None,
                label: 1,
            },
            coding: LabelCoding::Index,
            broken_rows: None,
        }),
    },
    TaskSpec {
        id: TaskId::GlueMrpc,
        name: "glue-mrpc",
        description: "GLUE MRPC paraphrase detection (your train.tsv and dev.tsv)",
        labels: &["not_equivalent", "equivalent"],
        objective: Objective::Classification,
        metric: Metric::AccuracyAndF1,
        inputs: GLUE_FILES,
        layout: tsv(
            "#1 String",
            Some("#2 String"),
            "Quality",
            LabelCoding::Index,
        ),
    },
    TaskSpec {
        id: TaskId::GlueQqp,
        name: "glue-qqp",
        description: "GLUE QQP duplicate questions (your train.tsv and dev.tsv)",
        labels: &["not_duplicate", "duplicate"],
        objective: Objective::Classification,
        metric: Metric::AccuracyAndF1,
        inputs: GLUE_FILES,
        layout: Layout::Tsv(TsvLayout {
            fields: TsvFields::Header {
                text_a: "question1",
                text_b: Some("question2"),
                label: "is_duplicate",
            },
            coding: LabelCoding::Index,
            // The published train.tsv has rows cut short by stray line breaks inside questions;
            // Hugging Face drops them too ("corrupted rows").
            broken_rows: Some("wrong column count (known broken rows of the published QQP files)"),
        }),
    },
    TaskSpec {
        id: TaskId::GlueMnli,
        name: "glue-mnli",
        description: "GLUE MNLI 3-way NLI (your train.tsv and dev_matched.tsv)",
        labels: &["entailment", "neutral", "contradiction"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: TaskInputs::UserFiles {
            train: "train.tsv",
            dev: "dev_matched.tsv",
        },
        layout: tsv(
            "sentence1",
            Some("sentence2"),
            "gold_label",
            LabelCoding::Name,
        ),
    },
    TaskSpec {
        id: TaskId::GlueQnli,
        name: "glue-qnli",
        description: "GLUE QNLI: does the sentence answer the question (your train.tsv and dev.tsv)",
        labels: NLI_BINARY,
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: GLUE_FILES,
        layout: tsv("question", Some("sentence"), "label", LabelCoding::Name),
    },
    TaskSpec {
        id: TaskId::GlueRte,
        name: "glue-rte",
        description: "GLUE RTE textual entailment (your train.tsv and dev.tsv)",
        labels: NLI_BINARY,
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: GLUE_FILES,
        layout: tsv("sentence1", Some("sentence2"), "label", LabelCoding::Name),
    },
    TaskSpec {
        id: TaskId::GlueWnli,
        name: "glue-wnli",
        description: "GLUE WNLI pronoun-resolution entailment (your train.tsv and dev.tsv)",
        labels: &["not_entailment", "entailment"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: GLUE_FILES,
        layout: tsv("sentence1", Some("sentence2"), "label", LabelCoding::Index),
    },
    TaskSpec {
        id: TaskId::SuperGlueBoolq,
        name: "superglue-boolq",
        description: "SuperGLUE BoolQ yes/no questions on a passage (your train.jsonl and val.jsonl)",
        labels: &["False", "True"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: SUPERGLUE_FILES,
        layout: jsonl("question", Some("passage"), LabelCoding::Bool),
    },
    TaskSpec {
        id: TaskId::SuperGlueCb,
        name: "superglue-cb",
        description: "SuperGLUE CommitmentBank 3-way NLI (your train.jsonl and val.jsonl)",
        labels: CB_LABELS,
        objective: Objective::Classification,
        metric: Metric::AccuracyAndMacroF1,
        inputs: SUPERGLUE_FILES,
        layout: jsonl("premise", Some("hypothesis"), LabelCoding::Name),
    },
    TaskSpec {
        id: TaskId::SuperGlueRte,
        name: "superglue-rte",
        description: "SuperGLUE RTE textual entailment (your train.jsonl and val.jsonl)",
        labels: NLI_BINARY,
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: SUPERGLUE_FILES,
        layout: jsonl("premise", Some("hypothesis"), LabelCoding::Name),
    },
    TaskSpec {
        id: TaskId::SuperGlueWic,
        name: "superglue-wic",
        description: "SuperGLUE WiC: is a word used in the same sense in two sentences (your train.jsonl and val.jsonl)",
        labels: &["False", "True"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: SUPERGLUE_FILES,
        layout: jsonl_template(JsonInputs::Wic),
    },
    TaskSpec {
        id: TaskId::SuperGlueWsc,
        name: "superglue-wsc",
        description: "SuperGLUE WSC: does a pronoun refer to a noun phrase (your train.jsonl and val.jsonl)",
        labels: &["False", "True"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: SUPERGLUE_FILES,
        layout: jsonl_template(JsonInputs::Wsc),
    },
    TaskSpec {
        id: TaskId::SentimentTweets,
        name: "sentiment-tweets",
        description: "Sentiment of tweets with VADER crowd ratings (|rating| ≥ 1; 2,419 train / 248 dev)",
        labels: &["negative", "positive"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: TaskInputs::Assets(&[AssetFile::Vader("tweets_GroundTruth.txt")]),
        layout: Layout::Vader,
    },
    TaskSpec {
        id: TaskId::SentimentAmazon,
        name: "sentiment-amazon",
        description: "Sentiment of Amazon review sentences with VADER crowd ratings (|rating| ≥ 1; 2,231 train / 224 dev, split by review)",
        labels: &["negative", "positive"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: TaskInputs::Assets(&[AssetFile::Vader("amazonReviewSnippets_GroundTruth.txt")]),
        layout: Layout::Vader,
    },
    TaskSpec {
        id: TaskId::SentimentNyt,
        name: "sentiment-nyt",
        description: "Sentiment of New York Times editorial sentences with VADER crowd ratings (|rating| ≥ 1; 1,409 train / 145 dev, split by editorial)",
        labels: &["negative", "positive"],
        objective: Objective::Classification,
        metric: Metric::Accuracy,
        inputs: TaskInputs::Assets(&[AssetFile::Vader("nytEditorialSnippets_GroundTruth.txt")]),
        layout: Layout::Vader,
    },
    TaskSpec {
        id: TaskId::SuperGlueMultirc,
        name: "superglue-multirc",
        description: "SuperGLUE MultiRC: is each candidate answer to a question on a paragraph correct (your train.jsonl and val.jsonl)",
        labels: &["False", "True"],
        objective: Objective::Classification,
        metric: Metric::F1AndExactMatch,
        inputs: SUPERGLUE_FILES,
        layout: Layout::MultircJsonl,
    },
    TaskSpec {
        id: TaskId::GlueStsb,
        name: "glue-stsb",
        description: "GLUE STS-B sentence similarity 0–5, regression (your train.tsv and dev.tsv)",
        labels: &[],
        objective: Objective::Regression,
        metric: Metric::Correlation,
        inputs: GLUE_FILES,
        layout: tsv("sentence1", Some("sentence2"), "score", LabelCoding::Number),
    },
    TaskSpec {
        id: TaskId::SuperGlueCopa,
        name: "superglue-copa",
        description: "SuperGLUE COPA: which alternative is the more plausible cause or effect, multiple choice (your train.jsonl and val.jsonl)",
        labels: &["choice1", "choice2"],
        objective: Objective::MultipleChoice,
        metric: Metric::Accuracy,
        inputs: SUPERGLUE_FILES,
        layout: Layout::Jsonl(JsonlLayout {
            inputs: JsonInputs::Copa,
            label: "label",
            coding: LabelCoding::Index,
        }),
    },
    TaskSpec {
        id: TaskId::SuperGlueRecord,
        name: "superglue-record",
        description: "SuperGLUE ReCoRD: which entity of a news passage fills a query's blank, candidates ranked per query (your train.jsonl and val.jsonl)",
        labels: &["False", "True"],
        objective: Objective::Classification,
        metric: Metric::Record,
        inputs: SUPERGLUE_FILES,
        layout: Layout::RecordJsonl,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_id_order_and_names_are_unique_and_parse_back() {
        for (index, spec) in TASKS.iter().enumerate() {
            assert_eq!(spec.id as usize, index, "{}", spec.name);
            assert_eq!(spec.name.parse::<TaskId>().unwrap(), spec.id);
            assert_eq!(spec.id.to_string(), spec.name);
        }
    }

    #[test]
    fn unknown_task_names_list_the_known_ones() {
        let error = "glue-stsc".parse::<TaskId>().unwrap_err().to_string();
        assert!(error.contains("unknown task `glue-stsc`"), "{error}");
        assert!(error.contains("sst2-rt, rte-epistemic"), "{error}");
    }

    #[test]
    fn layouts_agree_with_inputs_and_labels() {
        for spec in &TASKS {
            let assets = match spec.inputs {
                TaskInputs::Assets(files) => files.len(),
                TaskInputs::UserFiles { .. } => 0,
            };
            let expected_assets = match &spec.layout {
                Layout::Vader | Layout::BigBench(_) => 1,
                Layout::MultircNi => 2,
                Layout::Tsv(_) | Layout::Jsonl(_) | Layout::MultircJsonl | Layout::RecordJsonl => 0,
            };
            assert_eq!(assets, expected_assets, "{}", spec.name);
            // Regression has no labels and a regression metric; the rest at least two labels.
            let regression = spec.objective == Objective::Regression;
            assert_eq!(regression, spec.metric.scores_values(), "{}", spec.name);
            assert_eq!(regression, spec.num_labels() == 0, "{}", spec.name);
            assert!(regression || spec.num_labels() >= 2, "{}", spec.name);
            let number_coded = matches!(
                &spec.layout,
                Layout::Tsv(TsvLayout {
                    coding: LabelCoding::Number,
                    ..
                })
            );
            assert_eq!(regression, number_coded, "{}", spec.name);
            let bool_coded = matches!(
                &spec.layout,
                Layout::Jsonl(JsonlLayout {
                    coding: LabelCoding::Bool,
                    ..
                })
            );
            if bool_coded {
                assert_eq!(spec.labels, ["False", "True"], "{}", spec.name);
            }
            if matches!(spec.metric, Metric::F1 | Metric::AccuracyAndF1) {
                assert_eq!(spec.num_labels(), 2, "{}", spec.name);
            }
        }
    }

    #[test]
    fn official_metrics_follow_the_spec_table() {
        use Metric::*;
        let metric = |id: TaskId| id.spec().metric;
        assert_eq!(metric(TaskId::GlueCola), Matthews);
        assert_eq!(metric(TaskId::GlueMrpc), AccuracyAndF1);
        assert_eq!(metric(TaskId::GlueQqp), AccuracyAndF1);
        assert_eq!(metric(TaskId::SuperGlueCb), AccuracyAndMacroF1);
        assert_eq!(metric(TaskId::CbPresupp), AccuracyAndMacroF1);
        assert_eq!(metric(TaskId::MultircNi), F1);
        assert_eq!(metric(TaskId::SuperGlueMultirc), F1AndExactMatch);
        assert_eq!(metric(TaskId::SuperGlueRecord), Record);
        assert_eq!(metric(TaskId::GlueStsb), Correlation);
        for id in [
            TaskId::GlueSst2,
            TaskId::GlueMnli,
            TaskId::GlueQnli,
            TaskId::GlueRte,
            TaskId::GlueWnli,
            TaskId::SuperGlueBoolq,
            TaskId::SuperGlueRte,
            TaskId::SuperGlueWic,
            TaskId::SuperGlueWsc,
            TaskId::SuperGlueCopa,
        ] {
            assert_eq!(metric(id), Accuracy, "{id}");
        }
    }
}
