//! BIG-bench `task.json` files (assets.md §2.2): `{"examples": [{"input", "target_scores"}]}`.
//!
//! They have no splits; an example goes to dev when the hash of its split key is `0 mod 10`
//! (see [`split`](super::split)). Examples that are not understood are errors naming the file
//! and the example's index.
//!
//! The MultiRC-like task reads two natural_instructions files in which the crowd judged
//! candidate answers: subtask 056 offers an answer as correct ("Correct Answer: …", target
//! "Yes." when it really answers the question, "No." when it does so only partially or
//! wrongly) and subtask 057 offers one as wrong ("Incorrect Answer: …", "Yes." when it is a
//! plausible wrong answer). They become SuperGLUE MultiRC's "is this answer correct?": label 1
//! for 056's "Yes.", 0 for 056's "No." and for 057's "Yes.". A "No." in 057 says only that the
//! wrong answer was a poor distractor, either right after all or off-topic, so it has no
//! correctness label and is skipped (counted). As in spec §9's MultiRC, `text_a` is the
//! paragraph and `text_b` is `"{question} {answer}"`; the split key is the paragraph, so all of
//! a paragraph's questions fall on one side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::split::is_dev;
use super::{Example, Location, SkipReport, data_error, read_text, require_examples};
use crate::error::Result;

/// How a task's `input` string holds its text or texts.
#[derive(Debug)]
pub(crate) enum BigBenchInput {
    /// The whole input is `text_a`.
    Single,
    /// `{first}{text_a}{second}{text_b}{end}`, each text trimmed.
    Pair {
        first: &'static str,
        second: &'static str,
        end: &'static str,
    },
}

const POOR_DISTRACTOR: &str =
    "a wrong answer judged a poor distractor says nothing about its correctness";

/// Reads a `target_scores` task into (train, dev).
pub(crate) fn load(
    path: &Path,
    input: &BigBenchInput,
    labels: &[&str],
) -> Result<(Vec<Example>, Vec<Example>)> {
    let task = task_name(path);
    let mut split = Split::default();
    for (index, value) in read_examples(path)?.into_iter().enumerate() {
        let error = |message: String| data_error(path, None, format!("example {index}: {message}"));
        let raw = RawExample::from_value(value).map_err(error)?;
        let label = scored_label(&raw, labels).map_err(error)?;
        let (text_a, text_b) = split_input(&raw.input, input).map_err(error)?;
        let example = Example::labelled(format!("{task} example {index}"), text_a, text_b, label);
        split.push(&raw.input, example);
    }
    split.finish(path)
}

/// Reads the two natural_instructions MultiRC files into (train, dev); see the module notes.
pub(crate) fn load_multirc(
    paths: &[PathBuf; 2],
    skipped: &mut SkipReport,
) -> Result<(Vec<Example>, Vec<Example>)> {
    let mut split = Split::default();
    for path in paths {
        let task = task_name(path);
        for (index, value) in read_examples(path)?.into_iter().enumerate() {
            let error =
                |message: String| data_error(path, None, format!("example {index}: {message}"));
            let raw = RawExample::from_value(value).map_err(error)?;
            let candidate = parse_candidate(&raw.input).map_err(error)?;
            let judged_good = yes_or_no(raw.target.as_ref()).map_err(error)?;
            let label = match (candidate.offered_as_correct, judged_good) {
                (true, good) => usize::from(good),
                (false, true) => 0,
                (false, false) => {
                    skipped.record(path, POOR_DISTRACTOR, Location::Example(index));
                    continue;
                }
            };
            let example = Example::labelled(
                format!("{task} example {index}"),
                candidate.paragraph.to_string(),
                Some(format!("{} {}", candidate.question, candidate.answer)),
                label,
            );
            split.push(candidate.paragraph, example);
        }
    }
    split.finish(&paths[0])
}

/// Train and dev, filled by the hash rule.
#[derive(Default)]
struct Split {
    train: Vec<Example>,
    dev: Vec<Example>,
}

impl Split {
    fn push(&mut self, key: &str, example: Example) {
        if is_dev(key) {
            self.dev.push(example);
        } else {
            self.train.push(example);
        }
    }

    fn finish(self, path: &Path) -> Result<(Vec<Example>, Vec<Example>)> {
        require_examples(&self.train, "train", path)?;
        require_examples(&self.dev, "dev", path)?;
        Ok((self.train, self.dev))
    }
}

/// The examples of a task file, each still raw so a bad one can be reported by index.
fn read_examples(path: &Path) -> Result<Vec<Value>> {
    #[derive(Deserialize)]
    struct TaskFile {
        examples: Vec<Value>,
    }
    let file: TaskFile = serde_json::from_str(&read_text(path)?).map_err(|e| {
        data_error(
            path,
            Some(e.line()),
            format!("not a BIG-bench task file: {e}"),
        )
    })?;
    Ok(file.examples)
}

/// The task's name: the folder holding its `task.json`.
fn task_name(path: &Path) -> String {
    path.parent()
        .and_then(Path::file_name)
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

#[derive(Deserialize)]
struct RawExample {
    input: String,
    #[serde(default)]
    target_scores: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    target: Option<Target>,
}

impl RawExample {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }
}

/// BIG-bench writes a generative target as a string or a list of acceptable strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Target {
    One(String),
    Many(Vec<String>),
}

/// The one label scored above 0.
fn scored_label(raw: &RawExample, labels: &[&str]) -> std::result::Result<usize, String> {
    let scores = raw.target_scores.as_ref().ok_or("no `target_scores`")?;
    let mut chosen = Vec::new();
    for (name, &score) in scores {
        let label = labels
            .iter()
            .position(|l| l == name)
            .ok_or_else(|| format!("unknown label `{name}` (expected {})", labels.join(", ")))?;
        if score > 0.0 {
            chosen.push(label);
        }
    }
    match chosen[..] {
        [label] => Ok(label),
        _ => Err(format!(
            "expected exactly one target scored above 0, found {}",
            chosen.len()
        )),
    }
}

fn split_input(
    input: &str,
    format: &BigBenchInput,
) -> std::result::Result<(String, Option<String>), String> {
    let (first, second, end) = match *format {
        BigBenchInput::Single => return Ok((input.trim().to_string(), None)),
        BigBenchInput::Pair { first, second, end } => (first, second, end),
    };
    let pair = input
        .strip_prefix(first)
        .and_then(|rest| rest.strip_suffix(end))
        .and_then(|rest| rest.split_once(second))
        .map(|(a, b)| (a.trim(), b.trim()))
        .filter(|(a, b)| !a.is_empty() && !b.is_empty());
    match pair {
        Some((a, b)) => Ok((a.to_string(), Some(b.to_string()))),
        None => Err(format!(
            "input does not read {first:?} text {second:?} text {end:?}"
        )),
    }
}

/// One MultiRC candidate answer.
struct Candidate<'a> {
    paragraph: &'a str,
    question: &'a str,
    answer: &'a str,
    /// Subtask 056 offers answers as correct, 057 as incorrect.
    offered_as_correct: bool,
}

/// Reads `Paragraph- … \nQuestion: … \n(Correct|Incorrect) Answer: …`.
fn parse_candidate(input: &str) -> std::result::Result<Candidate<'_>, String> {
    let malformed = || {
        "input does not read \"Paragraph- …\\nQuestion: …\\nCorrect Answer: …\" \
         (or \"Incorrect Answer: …\")"
            .to_string()
    };
    let (paragraph, rest) = input
        .strip_prefix("Paragraph- ")
        .and_then(|rest| rest.split_once("\nQuestion: "))
        .ok_or_else(malformed)?;
    let (question, answer, offered_as_correct) =
        if let Some((question, answer)) = rest.split_once("\nCorrect Answer: ") {
            (question, answer, true)
        } else if let Some((question, answer)) = rest.split_once("\nIncorrect Answer: ") {
            (question, answer, false)
        } else {
            return Err(malformed());
        };
    Ok(Candidate {
        paragraph: paragraph.trim(),
        question: question.trim(),
        answer: answer.trim(),
        offered_as_correct,
    })
}

/// A `target` of "Yes." or "No." (case, spaces and the full stop do not matter).
fn yes_or_no(target: Option<&Target>) -> std::result::Result<bool, String> {
    let text = match target {
        Some(Target::One(text)) => text,
        Some(Target::Many(texts)) if texts.len() == 1 => &texts[0],
        _ => return Err("expected one `target`, \"Yes.\" or \"No.\"".to_string()),
    };
    match text.trim().trim_end_matches('.').to_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("target {text:?} is neither \"Yes.\" nor \"No.\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIR: BigBenchInput = BigBenchInput::Pair {
        first: "Sentence 1: ",
        second: "\nSentence 2: ",
        end: "\n\nThe answer is: ",
    };

    fn raw(json: &str) -> RawExample {
        RawExample::from_value(serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn pair_inputs_split_on_their_markers() {
        let input = "Sentence 1: He fell. \nSentence 2: He was standing.\n\nThe answer is: ";
        assert_eq!(
            split_input(input, &PAIR).unwrap(),
            ("He fell.".to_string(), Some("He was standing.".to_string()))
        );
        let error = split_input("Premise: a Hypothesis: b", &PAIR).unwrap_err();
        assert!(error.contains("\"Sentence 1: \" text"), "{error}");
        assert!(split_input("Sentence 1: a\nSentence 2: \n\nThe answer is: ", &PAIR).is_err());
        assert_eq!(
            split_input("  Is it? ", &BigBenchInput::Single).unwrap(),
            ("Is it?".to_string(), None)
        );
    }

    #[test]
    fn the_label_is_the_one_target_scored_above_zero() {
        let labels = ["No", "Yes"];
        let example = raw(r#"{"input": "q", "target_scores": {"Yes": 1, "No": 0}}"#);
        assert_eq!(scored_label(&example, &labels), Ok(1));
        let example = raw(r#"{"input": "q", "target_scores": {"Yes": 1, "No": 1}}"#);
        assert!(
            scored_label(&example, &labels)
                .unwrap_err()
                .contains("found 2")
        );
        let example = raw(r#"{"input": "q", "target_scores": {"Maybe": 1}}"#);
        assert_eq!(
            scored_label(&example, &labels).unwrap_err(),
            "unknown label `Maybe` (expected No, Yes)"
        );
        let example = raw(r#"{"input": "q", "target": "Yes."}"#);
        assert_eq!(
            scored_label(&example, &labels).unwrap_err(),
            "no `target_scores`"
        );
    }

    #[test]
    fn multirc_candidates_and_targets_parse() {
        let candidate =
            parse_candidate("Paragraph- Sent 1: A. \nQuestion: Who? \nIncorrect Answer:   B.")
                .unwrap();
        assert_eq!(
            (candidate.paragraph, candidate.question, candidate.answer),
            ("Sent 1: A.", "Who?", "B.")
        );
        assert!(!candidate.offered_as_correct);
        let candidate =
            parse_candidate("Paragraph- P \nQuestion: Q \nCorrect Answer: no.").unwrap();
        assert!(candidate.offered_as_correct);
        assert!(parse_candidate("Paragraph- P \nAnswer: Q").is_err());

        assert_eq!(
            yes_or_no(Some(&Target::Many(vec!["Yes.".into()]))),
            Ok(true)
        );
        assert_eq!(yes_or_no(Some(&Target::One(" no".into()))), Ok(false));
        assert!(yes_or_no(Some(&Target::One("Maybe.".into()))).is_err());
        assert!(yes_or_no(None).is_err());
    }
}
