//! The user's own CSV, TSV or JSON-lines files, read through a column mapping.
//!
//! CSV and TSV follow RFC 4180 with the given delimiter: a field that starts with `"` may hold
//! delimiters, line breaks and `""` for a quote; text after its closing quote is kept, as
//! Python's `csv` module keeps it. The first row names the columns unless the file has no
//! header, in which case columns are named by their 1-based position (`1`, `2`, …). In JSON
//! lines every line is an object and its keys are the columns; strings are taken as they are,
//! numbers and booleans as their JSON text, `null` as a missing value.
//!
//! Labels are classes (the training file's distinct values, listed back in
//! [`Dataset::labels`]) or numbers (regression). Rows without text or label are skipped and
//! counted; every other problem is an error naming the file and line.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::{
    Dataset, Example, Location, Metric, Objective, SkipReport, data_error, glue::missing_column,
    require_examples,
};
use crate::error::{Error, Result};

/// How a table file is written, known from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Comma-separated values (`.csv`).
    Csv,
    /// Tab-separated values (`.tsv`, `.tab`).
    Tsv,
    /// One JSON object per line (`.jsonl`, `.ndjson`).
    Jsonl,
}

impl TableFormat {
    /// The format a file name's extension says.
    pub fn of(path: &Path) -> Result<Self> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("csv") => Ok(TableFormat::Csv),
            Some("tsv" | "tab") => Ok(TableFormat::Tsv),
            Some("jsonl" | "ndjson") => Ok(TableFormat::Jsonl),
            _ => Err(data_error(
                path,
                None,
                "unknown file type: name it .csv, .tsv or .jsonl",
            )),
        }
    }
}

/// A table file's rows, by column.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column names, in file order (for JSON lines, in the order keys are first met).
    pub columns: Vec<String>,
    /// The rows after the header.
    pub rows: Vec<Row>,
}

/// One row of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The 1-based line the row starts on.
    pub line: usize,
    /// One value per column; `None` where a JSON line lacks the key or holds `null`.
    pub values: Vec<Option<String>>,
}

impl Table {
    /// The position of a column.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// Reads a CSV, TSV or JSON-lines file (`header` applies to CSV and TSV).
pub fn read_table(path: &Path, header: bool) -> Result<Table> {
    let text = read_utf8(path)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let table = match TableFormat::of(path)? {
        TableFormat::Csv => delimited(path, text, ',', header)?,
        TableFormat::Tsv => delimited(path, text, '\t', header)?,
        TableFormat::Jsonl => json_lines(path, text)?,
    };
    if table.columns.is_empty() {
        return Err(data_error(path, None, "empty file: no rows"));
    }
    Ok(table)
}

/// The file as UTF-8 text, refusing binary data with the line it starts on.
fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let line_at = |offset: usize| bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(data_error(
            path,
            Some(line_at(at)),
            "binary data (a NUL byte), not a text file",
        ));
    }
    String::from_utf8(bytes.clone()).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        data_error(
            path,
            Some(line_at(at)),
            format!(
                "not UTF-8 text (byte 0x{:02x} at offset {at}); save the file as UTF-8",
                bytes[at]
            ),
        )
    })
}

/// Splits RFC 4180 text into records with the line each starts on; blank lines hold none.
fn records(path: &Path, text: &str, delimiter: char) -> Result<Vec<(usize, Vec<String>)>> {
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let (mut line, mut start_line) = (1, 1);
    let mut quoted = false;
    // Whether the current field began with a quote, and whether anything was read in it.
    let mut field_started = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if !field_started => {
                quoted = true;
                field_started = true;
            }
            c if c == delimiter => {
                fields.push(std::mem::take(&mut field));
                field_started = false;
            }
            '\n' => {
                if field.ends_with('\r') {
                    field.pop();
                }
                fields.push(std::mem::take(&mut field));
                let blank = fields.len() == 1 && fields[0].is_empty() && !field_started;
                if !blank {
                    records.push((start_line, std::mem::take(&mut fields)));
                }
                fields.clear();
                field_started = false;
                line += 1;
                start_line = line;
            }
            _ => {
                field.push(c);
                field_started = true;
            }
        }
    }
    if quoted {
        return Err(data_error(
            path,
            Some(start_line),
            "a quoted field is never closed",
        ));
    }
    if field_started || !fields.is_empty() {
        if field.ends_with('\r') {
            field.pop();
        }
        fields.push(field);
        records.push((start_line, fields));
    }
    Ok(records)
}

fn delimited(path: &Path, text: &str, delimiter: char, header: bool) -> Result<Table> {
    let mut records = records(path, text, delimiter)?.into_iter();
    let columns: Vec<String> = if header {
        let Some((line, names)) = records.next() else {
            return Ok(Table {
                columns: Vec::new(),
                rows: Vec::new(),
            });
        };
        let mut seen = BTreeSet::new();
        for name in &names {
            if !seen.insert(name.as_str()) {
                return Err(data_error(
                    path,
                    Some(line),
                    format!("column `{name}` is named twice in the header"),
                ));
            }
        }
        names
    } else {
        let width = records.clone().next().map_or(0, |(_, fields)| fields.len());
        (1..=width).map(|i| i.to_string()).collect()
    };
    let rows = records
        .map(|(line, fields)| {
            if fields.len() != columns.len() {
                return Err(data_error(
                    path,
                    Some(line),
                    format!(
                        "{} fields, expected {} as in the {}",
                        fields.len(),
                        columns.len(),
                        if header { "header" } else { "first row" }
                    ),
                ));
            }
            Ok(Row {
                line,
                values: fields.into_iter().map(Some).collect(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Table { columns, rows })
}

fn json_lines(path: &Path, text: &str) -> Result<Table> {
    let mut columns: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    for (index, row) in text.lines().enumerate() {
        let line = index + 1;
        if row.trim().is_empty() {
            continue;
        }
        let error = |message: String| data_error(path, Some(line), message);
        let value: Value =
            serde_json::from_str(row).map_err(|e| error(format!("not JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(error("expected a JSON object".to_string()));
        };
        for key in object.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
        objects.push((line, object));
    }
    let rows = objects
        .into_iter()
        .map(|(line, object)| {
            let values = columns
                .iter()
                .map(|key| match object.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(text)) => Ok(Some(text.clone())),
                    Some(value @ (Value::Number(_) | Value::Bool(_))) => {
                        Ok(Some(value.to_string()))
                    }
                    Some(_) => Err(data_error(
                        path,
                        Some(line),
                        format!("`{key}` holds a list or an object, not a text or a number"),
                    )),
                })
                .collect::<Result<_>>()?;
            Ok(Row { line, values })
        })
        .collect::<Result<_>>()?;
    Ok(Table { columns, rows })
}

/// Which columns hold an example's texts and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    /// The text (the first text of a pair).
    pub text: String,
    /// The second text of a pair task, if any.
    pub text_pair: Option<String>,
    /// The label.
    pub label: String,
}

/// How labels are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    /// Classes: the training file's distinct values (in numeric order when all are integers,
    /// else in text order); accuracy and macro F1.
    Classes,
    /// Numbers: regression, Pearson and Spearman correlation.
    Numbers,
}

/// How to read a user's train and dev files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomLayout {
    /// The columns to read.
    pub columns: ColumnMapping,
    /// How labels are read.
    pub labels: LabelKind,
    /// Whether CSV and TSV files start with a row of column names.
    pub header: bool,
}

/// At most this many classes: more suggests a text column was named as the label.
pub const MAX_CLASSES: usize = 1000;

/// Why a row gives no example.
const NO_TEXT: &str = "no text";
const NO_LABEL: &str = "no label";

/// Reads the user's train and dev files through `layout`.
pub fn load_custom(layout: &CustomLayout, train: &Path, dev: &Path) -> Result<Dataset> {
    let mut skipped = SkipReport::default();
    let train_rows = mapped_rows(layout, train, &mut skipped)?;
    let dev_rows = mapped_rows(layout, dev, &mut skipped)?;
    let (objective, metric, labels) = match layout.labels {
        LabelKind::Numbers => (Objective::Regression, Metric::Correlation, Vec::new()),
        LabelKind::Classes => {
            let labels = class_names(train_rows.iter().map(|r| r.label.as_str()));
            if labels.len() > MAX_CLASSES {
                return Err(data_error(
                    train,
                    None,
                    format!(
                        "column `{}` has {} distinct labels (at most {MAX_CLASSES}); for a numeric target read labels as numbers",
                        layout.columns.label,
                        labels.len()
                    ),
                ));
            }
            if labels.len() < 2 {
                return Err(data_error(
                    train,
                    None,
                    format!(
                        "column `{}` holds one label only ({}): nothing to learn",
                        layout.columns.label,
                        labels.join(", ")
                    ),
                ));
            }
            (
                Objective::Classification,
                Metric::AccuracyAndMacroF1,
                labels,
            )
        }
    };
    let to_examples = |path: &Path, rows: Vec<MappedRow>| -> Result<Vec<Example>> {
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        rows.into_iter()
            .map(|row| {
                let error = |message: String| data_error(path, Some(row.line), message);
                let (label, value) = match layout.labels {
                    LabelKind::Numbers => match row.label.trim().parse::<f32>() {
                        Ok(number) if number.is_finite() => (0, Some(number)),
                        _ => return Err(error(format!("`{}` is not a number", row.label.trim()))),
                    },
                    LabelKind::Classes => {
                        let label =
                            labels.iter().position(|l| *l == row.label).ok_or_else(|| {
                                error(format!(
                                    "label `{}` is not one of the training file's ({})",
                                    row.label,
                                    shown(&labels)
                                ))
                            })?;
                        (label, None)
                    }
                };
                Ok(Example {
                    value,
                    ..Example::labelled(
                        format!("{file} line {}", row.line),
                        row.text,
                        row.text_pair,
                        label,
                    )
                })
            })
            .collect()
    };
    let train_examples = to_examples(train, train_rows)?;
    let dev_examples = to_examples(dev, dev_rows)?;
    require_examples(&train_examples, "train", train)?;
    require_examples(&dev_examples, "dev", dev)?;
    Ok(Dataset {
        train: train_examples,
        dev: dev_examples,
        labels,
        objective,
        metric,
        skipped,
    })
}

/// A row's mapped fields, before its label is read.
struct MappedRow {
    line: usize,
    text: String,
    text_pair: Option<String>,
    label: String,
}

fn mapped_rows(
    layout: &CustomLayout,
    path: &Path,
    skipped: &mut SkipReport,
) -> Result<Vec<MappedRow>> {
    let table = read_table(path, layout.header)?;
    let names: Vec<&str> = table.columns.iter().map(String::as_str).collect();
    let find = |name: &str| {
        table.column(name).ok_or_else(|| {
            let line = (layout.header && TableFormat::of(path).ok() != Some(TableFormat::Jsonl))
                .then_some(1);
            data_error(path, line, missing_column(name, &names))
        })
    };
    let text = find(&layout.columns.text)?;
    let text_pair = layout.columns.text_pair.as_deref().map(find).transpose()?;
    let label = find(&layout.columns.label)?;
    let mut rows = Vec::with_capacity(table.rows.len());
    for row in table.rows {
        let value = |column: usize| row.values[column].clone().filter(|v| !v.trim().is_empty());
        let (Some(first), Some(gold)) = (value(text), value(label)) else {
            let reason = if value(text).is_none() {
                NO_TEXT
            } else {
                NO_LABEL
            };
            skipped.record(path, reason, Location::Line(row.line));
            continue;
        };
        let second = match text_pair {
            Some(column) => match value(column) {
                Some(second) => Some(second),
                None => {
                    skipped.record(path, NO_TEXT, Location::Line(row.line));
                    continue;
                }
            },
            None => None,
        };
        rows.push(MappedRow {
            line: row.line,
            text: first,
            text_pair: second,
            label: gold,
        });
    }
    Ok(rows)
}

/// The distinct labels, in numeric order when every one is an integer, else in text order.
pub fn class_names<'a>(labels: impl Iterator<Item = &'a str>) -> Vec<String> {
    let distinct: BTreeSet<&str> = labels.collect();
    let mut names: Vec<String> = distinct.into_iter().map(str::to_string).collect();
    if names.iter().all(|n| n.parse::<i64>().is_ok()) {
        names.sort_by_key(|n| n.parse::<i64>().unwrap_or_default());
    }
    names
}

/// Up to ten labels for a message, then how many more.
fn shown(labels: &[String]) -> String {
    let mut text = labels
        .iter()
        .take(10)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if labels.len() > 10 {
        text.push_str(&format!(", … {} more", labels.len() - 10));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str, delimiter: char) -> Vec<(usize, Vec<String>)> {
        records(Path::new("f.csv"), text, delimiter).unwrap()
    }

    #[test]
    fn csv_fields_follow_rfc_4180_and_keep_their_starting_line() {
        let parsed = fields(
            "text,label\r\n\"a, \"\"quoted\"\"\nline\",1\n\nplain,0\n\"x\" y,2",
            ',',
        );
        let rows: Vec<(usize, Vec<&str>)> = parsed
            .iter()
            .map(|(line, f)| (*line, f.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            rows,
            vec![
                (1, vec!["text", "label"]),
                (2, vec!["a, \"quoted\"\nline", "1"]),
                (5, vec!["plain", "0"]),
                (6, vec!["x y", "2"]),
            ]
        );
        let tabs = fields("a\tb,c\n", '\t');
        assert_eq!(tabs, vec![(1, vec!["a".to_string(), "b,c".to_string()])]);
        let error = records(Path::new("f.csv"), "a\n\"open,1\n", ',').unwrap_err();
        assert_eq!(error.to_string(), "f.csv:2: a quoted field is never closed");
    }

    #[test]
    fn integer_classes_sort_by_value_and_others_by_text() {
        assert_eq!(
            class_names(["10", "2", "-1", "2"].into_iter()),
            ["-1", "2", "10"]
        );
        assert_eq!(
            class_names(["pos", "neg", "10"].into_iter()),
            ["10", "neg", "pos"]
        );
    }
}
