//! The published GLUE (tab-separated) and SuperGLUE (JSON lines) files.
//!
//! GLUE's files are not CSV: fields are split on tabs only and quotes are ordinary characters,
//! as Hugging Face reads them (`quoting=csv.QUOTE_NONE`). Columns are found by header name,
//! except in CoLA, whose files have no header.

use std::path::Path;

use serde_json::Value;

use super::{
    Credit, Example, Location, SkipReport, data_error, numbered_lines, read_text, require_examples,
};
use crate::error::Result;

/// Where a GLUE file keeps its texts and label.
#[derive(Debug)]
pub(crate) struct TsvLayout {
    pub(crate) fields: TsvFields,
    pub(crate) coding: LabelCoding,
    /// For files published with rows known to be broken: rows whose column count is wrong are
    /// skipped for this reason instead of failing the load.
    pub(crate) broken_rows: Option<&'static str>,
}

/// A GLUE file's columns, by header name or, for header-less files, by position.
#[derive(Debug)]
pub(crate) enum TsvFields {
    Header {
        text_a: &'static str,
        text_b: Option<&'static str>,
        label: &'static str,
    },
    NoHeader {
        width: usize,
        text_a: usize,
        text_b: Option<usize>,
        label: usize,
    },
}

/// Where a SuperGLUE file keeps its texts and label.
#[derive(Debug)]
pub(crate) struct JsonlLayout {
    pub(crate) inputs: JsonInputs,
    pub(crate) label: &'static str,
    pub(crate) coding: LabelCoding,
}

/// How a SuperGLUE record becomes the model's text (or pair of texts).
#[derive(Debug, Clone, Copy)]
pub(crate) enum JsonInputs {
    /// Two fields as they are (`text_b` for pair tasks).
    Fields {
        text_a: &'static str,
        text_b: Option<&'static str>,
    },
    /// WiC, the reference's template 0, one text: `{sentence1} {sentence2} Does {word} have the
    /// same meaning in both sentences?`.
    Wic,
    /// WSC, the reference's template 0: `{span2_text}: {text}` paired with `span1_text`. The
    /// spans sit under `target` in the published files and at the top level in flattened ones.
    Wsc,
    /// COPA as multiple choice, as the reference builds it: `{premise} because` (for a
    /// `cause` question) or `{premise} so` (for `effect`), paired with `choice1` and `choice2`.
    Copa,
}

/// How a file writes a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabelCoding {
    /// The label's index: `0`, `1`, ….
    Index,
    /// The label's name, e.g. `not_entailment`.
    Name,
    /// A JSON boolean: false is label 0, true label 1.
    Bool,
    /// A number, the gold value of a regression task (STS-B's `score`).
    Number,
}

/// Reads one GLUE file (`split` names it in errors: "train" or "dev").
pub(crate) fn load_tsv(
    path: &Path,
    split: &str,
    layout: &TsvLayout,
    labels: &[&str],
    skipped: &mut SkipReport,
) -> Result<Vec<Example>> {
    let examples = parse_tsv(path, &read_text(path)?, layout, labels, skipped)?;
    require_examples(&examples, split, path)?;
    Ok(examples)
}

/// Reads one SuperGLUE file (`split` names it in errors: "train" or "dev").
pub(crate) fn load_jsonl(
    path: &Path,
    split: &str,
    layout: &JsonlLayout,
    labels: &[&str],
) -> Result<Vec<Example>> {
    let examples = parse_jsonl(path, &read_text(path)?, layout, labels)?;
    require_examples(&examples, split, path)?;
    Ok(examples)
}

/// Reads one SuperGLUE MultiRC file: each line a passage with its questions, each question
/// with candidate answers labelled 0 or 1. Every answer becomes one example, the passage paired
/// with `"{question} {answer}"` as the reference pairs them; answers of one question share a
/// group (numbered through the file), which exact match scores together.
pub(crate) fn load_multirc(path: &Path, split: &str) -> Result<Vec<Example>> {
    let examples = parse_multirc(path, &read_text(path)?)?;
    require_examples(&examples, split, path)?;
    Ok(examples)
}

fn parse_multirc(path: &Path, text: &str) -> Result<Vec<Example>> {
    let file = file_name(path);
    let mut examples = Vec::new();
    let mut question_number: u32 = 0;
    for (line, row) in numbered_lines(text) {
        let error = |message: String| data_error(path, Some(line), message);
        let (value, paragraph) = passage_line(row).map_err(error)?;
        let questions =
            list_at(&value["passage"], "questions", "passage.questions").map_err(error)?;
        for (q, question) in questions.iter().enumerate() {
            let asked = question
                .get("question")
                .and_then(Value::as_str)
                .ok_or_else(|| error(format!("question {q}: no `question` string")))?;
            let answers = question
                .get("answers")
                .and_then(Value::as_array)
                .ok_or_else(|| error(format!("question {q}: no `answers` list")))?;
            for (a, answer) in answers.iter().enumerate() {
                let at = |what: &str| format!("question {q}, answer {a}: {what}");
                let reply = answer
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| error(at("no `text` string")))?;
                let label = match answer.get("label").and_then(Value::as_u64) {
                    Some(label @ (0 | 1)) => label as usize,
                    _ => return Err(error(at("`label` must be 0 or 1"))),
                };
                examples.push(Example {
                    group: Some(question_number),
                    ..Example::labelled(
                        format!("{file} line {line} question {q} answer {a}"),
                        paragraph.to_string(),
                        Some(format!("{asked} {reply}")),
                        label,
                    )
                });
            }
            question_number = question_number
                .checked_add(1)
                .ok_or_else(|| error("more than 2³² questions".to_string()))?;
        }
    }
    Ok(examples)
}

/// Reads one SuperGLUE ReCoRD file: each line a passage with its marked entities and its
/// queries. As the reference builds them (through Hugging Face's `super_glue`), every distinct
/// entity (sorted) of the passage is one candidate of each query: the passage, with
/// `@highlight\n` written `- `, paired with the query whose `@placeholder` is the entity;
/// label 1 when the entity is a gold answer. A query's candidates share a group, and each
/// carries its [`Credit`] against the query's answers for scoring.
pub(crate) fn load_record(
    path: &Path,
    split: &str,
    skipped: &mut SkipReport,
) -> Result<Vec<Example>> {
    let examples = parse_record(path, &read_text(path)?, skipped)?;
    require_examples(&examples, split, path)?;
    Ok(examples)
}

/// Why a ReCoRD query gives no example.
const NO_ENTITIES: &str = "a passage with no marked entity has no candidate for its queries";

fn parse_record(path: &Path, text: &str, skipped: &mut SkipReport) -> Result<Vec<Example>> {
    let file = file_name(path);
    let mut examples = Vec::new();
    let mut query_number: u32 = 0;
    for (line, row) in numbered_lines(text) {
        let error = |message: String| data_error(path, Some(line), message);
        let (value, raw) = passage_line(row).map_err(error)?;
        let marked = list_at(&value["passage"], "entities", "passage.entities").map_err(error)?;
        // Offsets count characters (Python's string indices), `end` inclusive.
        let characters: Vec<char> = raw.chars().collect();
        let mut entities = Vec::with_capacity(marked.len());
        for (e, entity) in marked.iter().enumerate() {
            let offset = |key: &str| entity.get(key).and_then(Value::as_u64).map(|n| n as usize);
            match (offset("start"), offset("end")) {
                (Some(start), Some(end)) if start <= end && end < characters.len() => {
                    entities.push(characters[start..=end].iter().collect::<String>());
                }
                _ => {
                    return Err(error(format!(
                        "entity {e}: `start` and `end` must be offsets into the passage's {} characters, start ≤ end",
                        characters.len()
                    )));
                }
            }
        }
        entities.sort();
        entities.dedup();
        let paragraph = raw.replace("@highlight\n", "- ");
        let queries = list_at(&value, "qas", "qas").map_err(error)?;
        for (q, qa) in queries.iter().enumerate() {
            let query = qa
                .get("query")
                .and_then(Value::as_str)
                .ok_or_else(|| error(format!("query {q}: no `query` string")))?;
            let answers =
                qa.get("answers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| error(format!("query {q}: no `answers` list")))?
                    .iter()
                    .enumerate()
                    .map(|(a, answer)| {
                        answer.get("text").and_then(Value::as_str).ok_or_else(|| {
                            error(format!("query {q}, answer {a}: no `text` string"))
                        })
                    })
                    .collect::<Result<Vec<&str>>>()?;
            if answers.is_empty() {
                return Err(error(format!(
                    "query {q}: no gold answers (the published test file has none; train and dev files do)"
                )));
            }
            if entities.is_empty() {
                skipped.record(path, NO_ENTITIES, Location::Line(line));
                continue;
            }
            for (e, entity) in entities.iter().enumerate() {
                examples.push(Example {
                    group: Some(query_number),
                    credit: Some(Credit::of(entity, &answers)),
                    ..Example::labelled(
                        format!("{file} line {line} query {q} entity {e}"),
                        paragraph.clone(),
                        Some(query.replace("@placeholder", entity)),
                        usize::from(answers.contains(&entity.as_str())),
                    )
                });
            }
            query_number = query_number
                .checked_add(1)
                .ok_or_else(|| error("more than 2³² queries".to_string()))?;
        }
    }
    Ok(examples)
}

/// A MultiRC or ReCoRD line: the record, and its `passage.text`.
fn passage_line(row: &str) -> std::result::Result<(Value, String), String> {
    let value: Value = serde_json::from_str(row).map_err(|e| format!("not JSON: {e}"))?;
    let text = value
        .get("passage")
        .ok_or("no `passage`")?
        .get("text")
        .and_then(Value::as_str)
        .ok_or("no `passage.text` string")?
        .to_string();
    Ok((value, text))
}

/// `value[key]` as a list; `what` names it in the error.
fn list_at<'v>(
    value: &'v Value,
    key: &str,
    what: &str,
) -> std::result::Result<&'v [Value], String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("no `{what}` list"))
}

/// Column positions once the header, if any, is read.
struct Columns {
    width: usize,
    text_a: usize,
    text_b: Option<usize>,
    label: usize,
}

/// The error for a header without `name`. The columns found are listed only when the line
/// looks like a header (tab-separated, short names): a server must not echo the first line of
/// whatever file a request names (a token file, a database) back to the client.
pub(super) fn missing_column(name: &str, found: &[&str]) -> String {
    let header_like = found.len() >= 2
        && found.len() <= 64
        && found
            .iter()
            .all(|n| n.len() <= 64 && !n.chars().any(char::is_control));
    if header_like {
        format!(
            "no `{name}` column in the header (found: {})",
            found.join(", ")
        )
    } else {
        format!("no `{name}` column: the first line is not a header of column names")
    }
}

fn parse_tsv(
    path: &Path,
    text: &str,
    layout: &TsvLayout,
    labels: &[&str],
    skipped: &mut SkipReport,
) -> Result<Vec<Example>> {
    let mut lines = numbered_lines(text);
    let columns = match layout.fields {
        TsvFields::Header {
            text_a,
            text_b,
            label,
        } => {
            let Some((line, header)) = lines.next() else {
                return Err(data_error(path, None, "empty file: no header"));
            };
            let names: Vec<&str> = header.split('\t').collect();
            let find = |name: &str| {
                names
                    .iter()
                    .position(|n| *n == name)
                    .ok_or_else(|| data_error(path, Some(line), missing_column(name, &names)))
            };
            Columns {
                width: names.len(),
                text_a: find(text_a)?,
                text_b: text_b.map(find).transpose()?,
                label: find(label)?,
            }
        }
        TsvFields::NoHeader {
            width,
            text_a,
            text_b,
            label,
        } => Columns {
            width,
            text_a,
            text_b,
            label,
        },
    };
    let file = file_name(path);
    let mut examples = Vec::new();
    for (line, row) in lines {
        let fields: Vec<&str> = row.split('\t').collect();
        if fields.len() != columns.width {
            if let Some(reason) = layout.broken_rows {
                skipped.record(path, reason, Location::Line(line));
                continue;
            }
            return Err(data_error(
                path,
                Some(line),
                format!(
                    "expected {} tab-separated columns, found {}",
                    columns.width,
                    fields.len()
                ),
            ));
        }
        let (label, value) = text_gold(fields[columns.label], layout.coding, labels)
            .map_err(|message| data_error(path, Some(line), message))?;
        examples.push(Example {
            value,
            ..Example::labelled(
                format!("{file} line {line}"),
                fields[columns.text_a].to_string(),
                columns.text_b.map(|b| fields[b].to_string()),
                label,
            )
        });
    }
    Ok(examples)
}

fn parse_jsonl(
    path: &Path,
    text: &str,
    layout: &JsonlLayout,
    labels: &[&str],
) -> Result<Vec<Example>> {
    let file = file_name(path);
    numbered_lines(text)
        .map(|(line, row)| {
            let error = |message: String| data_error(path, Some(line), message);
            let value: Value =
                serde_json::from_str(row).map_err(|e| error(format!("not JSON: {e}")))?;
            let object = value
                .as_object()
                .ok_or_else(|| error("expected a JSON object".to_string()))?;
            let field = |key: &str| object.get(key).ok_or_else(|| error(format!("no `{key}`")));
            let string = |key: &str| match field(key)? {
                Value::String(text) => Ok(text.clone()),
                other => Err(error(format!("`{key}` is {other}, not a string"))),
            };
            // A WSC span: under `target`, or flattened to the top level.
            let span = |key: &str| match object.get("target").and_then(|t| t.get(key)) {
                Some(Value::String(text)) => Ok(text.clone()),
                Some(other) => Err(error(format!("`target.{key}` is {other}, not a string"))),
                None => string(key),
            };
            let label = json_label(field(layout.label)?, layout.coding, labels).map_err(error)?;
            let mut choices = Vec::new();
            let (text_a, text_b) = match layout.inputs {
                JsonInputs::Fields { text_a, text_b } => {
                    (string(text_a)?, text_b.map(string).transpose()?)
                }
                JsonInputs::Copa => {
                    let joiner = match string("question")?.as_str() {
                        "cause" => "because",
                        "effect" => "so",
                        other => {
                            return Err(error(format!(
                                "`question` is `{other}`, expected cause or effect"
                            )));
                        }
                    };
                    choices = vec![string("choice1")?, string("choice2")?];
                    (format!("{} {joiner}", string("premise")?), None)
                }
                JsonInputs::Wic => (
                    format!(
                        "{} {} Does {} have the same meaning in both sentences?",
                        string("sentence1")?,
                        string("sentence2")?,
                        string("word")?
                    ),
                    None,
                ),
                JsonInputs::Wsc => (
                    format!("{}: {}", span("span2_text")?, string("text")?),
                    Some(span("span1_text")?),
                ),
            };
            Ok(Example {
                choices,
                ..Example::labelled(format!("{file} line {line}"), text_a, text_b, label)
            })
        })
        .collect()
}

/// A gold label or number written as text: the label's index (and no value), or for
/// [`LabelCoding::Number`] label 0 and the number, which must be finite.
fn text_gold(
    raw: &str,
    coding: LabelCoding,
    labels: &[&str],
) -> std::result::Result<(usize, Option<f32>), String> {
    if coding != LabelCoding::Number {
        return text_label(raw, coding, labels).map(|label| (label, None));
    }
    match raw.trim().parse::<f32>() {
        Ok(value) if value.is_finite() => Ok((0, Some(value))),
        _ => Err(format!("`{}` is not a number", raw.trim())),
    }
}

/// A label written as text: its index or its name, per `coding`.
fn text_label(
    raw: &str,
    coding: LabelCoding,
    labels: &[&str],
) -> std::result::Result<usize, String> {
    let raw = raw.trim();
    let found = match coding {
        LabelCoding::Index => raw.parse::<usize>().ok().filter(|&i| i < labels.len()),
        LabelCoding::Name => labels.iter().position(|name| *name == raw),
        LabelCoding::Bool | LabelCoding::Number => None,
    };
    found.ok_or_else(|| {
        format!(
            "unknown label `{raw}` (expected {})",
            expected(coding, labels)
        )
    })
}

/// A label written as a JSON value.
fn json_label(
    value: &Value,
    coding: LabelCoding,
    labels: &[&str],
) -> std::result::Result<usize, String> {
    match (coding, value) {
        (LabelCoding::Bool, Value::Bool(value)) => Ok(usize::from(*value)),
        (LabelCoding::Name | LabelCoding::Index, Value::String(raw)) => {
            text_label(raw, coding, labels)
        }
        (LabelCoding::Index, Value::Number(number)) => {
            text_label(&number.to_string(), coding, labels)
        }
        (_, other) => Err(format!(
            "unknown label {other} (expected {})",
            expected(coding, labels)
        )),
    }
}

/// The accepted spellings of a label, for error messages.
fn expected(coding: LabelCoding, labels: &[&str]) -> String {
    match coding {
        LabelCoding::Index => (0..labels.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        LabelCoding::Name => labels.join(", "),
        LabelCoding::Bool => "true or false".to_string(),
        LabelCoding::Number => "a number".to_string(),
    }
}

/// The file's name, for example ids.
fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::missing_column;

    #[test]
    fn a_header_is_listed_and_other_first_lines_are_not_echoed() {
        let listed = missing_column("label", &["sentence", "score"]);
        assert!(listed.contains("found: sentence, score"), "{listed}");
        let secret = missing_column("label", &["hunter2-a-token"]);
        assert!(!secret.contains("hunter2"), "{secret}");
        let binary = missing_column("label", &["SQLite format 3\0", "x"]);
        assert!(!binary.contains("SQLite"), "{binary}");
    }
}
