//! The user's own CSV, TSV and JSON-lines files through a column mapping: labels as classes or
//! numbers, with or without a header, skipped rows counted, and errors naming file and line.

use std::path::PathBuf;

use lightpeft_engine::data::{
    ColumnMapping, CustomLayout, Dataset, LabelKind, Location, Metric, Objective, load_custom,
    read_table,
};
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn layout(text: &str, text_pair: Option<&str>, label: &str, labels: LabelKind) -> CustomLayout {
    CustomLayout {
        columns: ColumnMapping {
            text: text.to_string(),
            text_pair: text_pair.map(str::to_string),
            label: label.to_string(),
        },
        labels,
        header: true,
    }
}

/// Loads a train and a dev file, both named with `extension`.
fn load(
    layout: &CustomLayout,
    extension: &str,
    train: &str,
    dev: &str,
) -> lightpeft_engine::Result<Dataset> {
    let dir = TempDir::new().unwrap();
    let train = write(&dir, &format!("train.{extension}"), train.as_bytes());
    let dev = write(&dir, &format!("dev.{extension}"), dev.as_bytes());
    load_custom(layout, &train, &dev)
}

const REVIEWS: &str = "id,review,stars\n\
1,\"Great, really great\",pos\n\
2,Dull,neg\n\
3,,pos\n\
4,\"Fine\nin the end\",neu\n\
5,Bad,\n\
6,Loved it,pos\n";

#[test]
fn csv_classes_come_from_the_training_file_and_rows_without_text_or_label_are_counted() {
    let mapping = layout("review", None, "stars", LabelKind::Classes);
    let data = load(
        &mapping,
        "csv",
        REVIEWS,
        "review,stars\nOkay,neu\nAwful,neg\n",
    )
    .unwrap();
    assert_eq!(data.labels, ["neg", "neu", "pos"]);
    assert_eq!(data.objective, Objective::Classification);
    assert_eq!(data.metric, Metric::AccuracyAndMacroF1);
    let train: Vec<(&str, usize)> = data
        .train
        .iter()
        .map(|e| (e.text_a.as_str(), e.label))
        .collect();
    assert_eq!(
        train,
        [
            ("Great, really great", 2),
            ("Dull", 0),
            ("Fine\nin the end", 1),
            ("Loved it", 2)
        ]
    );
    assert_eq!(data.train[2].id, "train.csv line 5");
    let dev: Vec<usize> = data.dev.iter().map(|e| e.label).collect();
    assert_eq!(dev, [1, 0]);
    // Line 4 has no review, the row starting on line 7 no stars.
    assert_eq!(data.skipped.total(), 2, "{}", data.skipped);
    let reasons: Vec<(&str, &[Location])> = data
        .skipped
        .groups
        .iter()
        .map(|g| (g.reason, g.at.as_slice()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("no text", &[Location::Line(4)][..]),
            ("no label", &[Location::Line(7)][..])
        ]
    );
    // Always "pos" (2 of 4 train rows) is right on none of dev.
    assert_eq!(data.majority_baseline().unwrap().values.primary(), 0.0);
}

#[test]
fn tsv_pairs_without_a_header_read_columns_by_position_and_integer_labels_in_order() {
    let mut mapping = layout("1", Some("2"), "3", LabelKind::Classes);
    mapping.header = false;
    let data = load(
        &mapping,
        "tsv",
        "a cat\ta dog\t10\nthe sun\tthe moon\t2\nx\ty\t2\n",
        "p\tq\t10\n",
    )
    .unwrap();
    // Integers sort by value, so "2" comes before "10".
    assert_eq!(data.labels, ["2", "10"]);
    assert_eq!(data.train[0].text_b.as_deref(), Some("a dog"));
    assert_eq!(data.train[0].label, 1);
    assert_eq!(data.dev[0].label, 1);
}

#[test]
fn jsonl_numbers_make_a_regression_task() {
    let mapping = layout("sentence", None, "score", LabelKind::Numbers);
    let train = "{\"sentence\": \"a\", \"score\": 1.5}\n\n{\"sentence\": \"b\", \"score\": \"4\"}\n{\"sentence\": \"c\", \"score\": null}\n";
    let data = load(
        &mapping,
        "jsonl",
        train,
        "{\"sentence\": \"d\", \"score\": 2}\n",
    )
    .unwrap();
    assert_eq!(data.objective, Objective::Regression);
    assert_eq!(data.metric, Metric::Correlation);
    assert!(data.labels.is_empty());
    let values: Vec<Option<f32>> = data.train.iter().map(|e| e.value).collect();
    assert_eq!(values, [Some(1.5), Some(4.0)]);
    assert_eq!(data.train[1].id, "train.jsonl line 3");
    assert_eq!(data.skipped.total(), 1);
    assert_eq!(data.dev[0].value, Some(2.0));
}

#[test]
fn bad_files_get_errors_that_name_the_file_and_line() {
    let classes = layout("review", None, "stars", LabelKind::Classes);
    let error = |layout: &CustomLayout, extension: &str, train: &str, dev: &str| {
        load(layout, extension, train, dev).unwrap_err().to_string()
    };
    // A missing column, with the header's columns listed.
    let message = error(&classes, "csv", REVIEWS, "text,stars\nOkay,neu\n");
    assert!(
        message.ends_with("dev.csv:1: no `review` column in the header (found: text, stars)"),
        "{message}"
    );
    // A dev label the training file never had.
    let message = error(
        &classes,
        "csv",
        REVIEWS,
        "review,stars\nOkay,neu\nMeh,mixed\n",
    );
    assert!(
        message.ends_with(
            "dev.csv:3: label `mixed` is not one of the training file's (neg, neu, pos)"
        ),
        "{message}"
    );
    // An empty file, and one with a header only.
    let message = error(&classes, "csv", REVIEWS, "");
    assert!(
        message.ends_with("dev.csv: empty file: no rows"),
        "{message}"
    );
    let message = error(&classes, "csv", REVIEWS, "review,stars\n");
    assert!(message.ends_with("dev.csv: no dev examples"), "{message}");
    // A row with too few fields.
    let message = error(&classes, "csv", REVIEWS, "review,stars\nOkay\n");
    assert!(
        message.ends_with("dev.csv:2: 1 fields, expected 2 as in the header"),
        "{message}"
    );
    // One class only.
    let message = error(
        &classes,
        "csv",
        "review,stars\na,pos\nb,pos\n",
        "review,stars\nc,pos\n",
    );
    assert!(
        message.ends_with("train.csv: column `stars` holds one label only (pos): nothing to learn"),
        "{message}"
    );
    // A number that is not one.
    let numbers = layout("review", None, "stars", LabelKind::Numbers);
    let message = error(
        &numbers,
        "csv",
        "review,stars\na,1\nb,2\n",
        "review,stars\nc,five\n",
    );
    assert!(
        message.ends_with("dev.csv:2: `five` is not a number"),
        "{message}"
    );
    // An unknown extension.
    let message = error(&classes, "xlsx", REVIEWS, REVIEWS);
    assert!(
        message.ends_with("train.xlsx: unknown file type: name it .csv, .tsv or .jsonl"),
        "{message}"
    );

    // Bad encodings: Latin-1 on line 3, and binary data.
    let dir = TempDir::new().unwrap();
    let latin1 = write(&dir, "latin1.csv", b"review,stars\na,pos\ncaf\xe9,neg\n");
    let message = read_table(&latin1, true).unwrap_err().to_string();
    assert!(
        message.ends_with(
            "latin1.csv:3: not UTF-8 text (byte 0xe9 at offset 22); save the file as UTF-8"
        ),
        "{message}"
    );
    let binary = write(&dir, "garbage.csv", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    let message = read_table(&binary, true).unwrap_err().to_string();
    assert!(
        message.ends_with("garbage.csv:3: binary data (a NUL byte), not a text file"),
        "{message}"
    );
    let json = write(&dir, "rows.jsonl", b"{\"text\": \"a\"}\n[1, 2]\n");
    let message = read_table(&json, true).unwrap_err().to_string();
    assert!(
        message.ends_with("rows.jsonl:2: expected a JSON object"),
        "{message}"
    );
}
