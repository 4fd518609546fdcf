//! VADER's crowd-rated snippets (assets.md §2.1), `id \t mean_rating \t text`: `sst2-rt` (movie
//! reviews) and the `sentiment-*` tasks (tweets, Amazon reviews, NYT editorials).
//!
//! Label 1 (positive) when the mean crowd rating is above 0; ratings with |rating| < 1 are too
//! neutral for a binary label and are skipped (counted). Dev is `id % 10 == 0`. The Amazon and
//! NYT files number snippets `<document>_<sentence>`: there the document's number decides, so a
//! review's sentences stay together. Any other id goes to dev by the hash rule BIG-bench uses,
//! applied to the id.

use std::path::Path;

use super::split::{is_dev, is_dev_id};
use super::{
    Example, Location, SkipReport, data_error, numbered_lines, read_text, require_examples,
};
use crate::error::Result;

const NEUTRAL: &str = "|mean rating| < 1, too neutral for a binary label";

/// Reads the snippets file into (train, dev).
pub(crate) fn load(path: &Path, skipped: &mut SkipReport) -> Result<(Vec<Example>, Vec<Example>)> {
    parse(path, &read_text(path)?, skipped)
}

fn parse(
    path: &Path,
    text: &str,
    skipped: &mut SkipReport,
) -> Result<(Vec<Example>, Vec<Example>)> {
    let (mut train, mut dev) = (Vec::new(), Vec::new());
    for (line, row) in numbered_lines(text) {
        let error = |message: String| data_error(path, Some(line), message);
        // A snippet may itself hold a tab; only the first two separate fields.
        let fields: Vec<&str> = row.splitn(3, '\t').collect();
        let [id, rating, snippet] = fields[..] else {
            return Err(error(format!(
                "expected `id<TAB>mean rating<TAB>text`, found {} field(s)",
                fields.len()
            )));
        };
        if id.is_empty() {
            return Err(error("empty id".to_string()));
        }
        let rating: f64 = rating
            .trim()
            .parse()
            .ok()
            .filter(|rating: &f64| rating.is_finite())
            .ok_or_else(|| error(format!("mean rating `{rating}` is not a number")))?;
        if rating.abs() < 1.0 {
            skipped.record(path, NEUTRAL, Location::Line(line));
            continue;
        }
        let example = Example::labelled(
            id.to_string(),
            snippet.to_string(),
            None,
            usize::from(rating > 0.0),
        );
        let document = id.split_once('_').map_or(id, |(document, _)| document);
        let to_dev = match (id.parse::<u64>(), document.parse::<u64>()) {
            (Ok(id), _) => is_dev_id(id),
            (_, Ok(document)) => is_dev_id(document),
            _ => is_dev(id),
        };
        if to_dev {
            dev.push(example);
        } else {
            train.push(example);
        }
    }
    require_examples(&train, "train", path)?;
    require_examples(&dev, "dev", path)?;
    Ok((train, dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<(Vec<Example>, Vec<Example>, SkipReport)> {
        let mut skipped = SkipReport::default();
        let (train, dev) = parse(Path::new("snippets.txt"), text, &mut skipped)?;
        Ok((train, dev, skipped))
    }

    fn ids(examples: &[Example]) -> Vec<&str> {
        examples.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn labels_on_the_rating_sign_drops_neutral_rows_and_splits_on_the_id() {
        let text = "1\t2.5\tgreat\r\n2\t-1.0\tbad\r\n3\t0.99\tmeh\r\n10\t-3\tawful\r\n20\t1\tfine\tindeed\r\n";
        let (train, dev, skipped) = parse_text(text).unwrap();
        assert_eq!(ids(&train), ["1", "2"]);
        assert_eq!(ids(&dev), ["10", "20"]);
        assert_eq!(train.iter().map(|e| e.label).collect::<Vec<_>>(), [1, 0]);
        assert_eq!(dev[0].label, 0);
        // A tab inside the snippet stays in the text; CRLF does not.
        assert_eq!(dev[1].text_a, "fine\tindeed");
        assert_eq!(train[0].text_a, "great");
        assert_eq!(skipped.total(), 1);
        assert_eq!(skipped.groups[0].at, [Location::Line(3)]);
    }

    #[test]
    fn the_split_ignores_file_order() {
        let rows = [
            "1\t2\ta",
            "10\t-2\tb",
            "11\t2\tc",
            "20\t2\td",
            "x_7\t2\te",
            "x_8\t-2\tf",
        ];
        let forward = parse_text(&rows.join("\n")).unwrap();
        let mut reversed_rows = rows;
        reversed_rows.reverse();
        let mut backward = parse_text(&reversed_rows.join("\n")).unwrap();
        backward.0.reverse();
        backward.1.reverse();
        assert_eq!(forward.0, backward.0);
        assert_eq!(forward.1, backward.1);
    }

    #[test]
    fn sentences_of_one_document_share_its_split() {
        let rows: Vec<String> = (1..=30)
            .flat_map(|d| (1..=3).map(move |s| format!("{d}_{s}\t2\tdoc {d} sentence {s}")))
            .collect();
        let (train, dev, _) = parse_text(&rows.join("\r\n")).unwrap();
        assert_eq!(
            ids(&dev),
            [
                "10_1", "10_2", "10_3", "20_1", "20_2", "20_3", "30_1", "30_2", "30_3"
            ]
        );
        assert_eq!(train.len(), 81);
    }

    #[test]
    fn non_integer_ids_split_on_their_hash() {
        let rows: Vec<String> = (0..200).map(|i| format!("x{i}_1\t2\ttext {i}")).collect();
        let (train, dev, _) = parse_text(&rows.join("\n")).unwrap();
        assert_eq!(train.len() + dev.len(), 200);
        for example in &dev {
            assert!(is_dev(&example.id), "{}", example.id);
        }
        for example in &train {
            assert!(!is_dev(&example.id), "{}", example.id);
        }
        assert!(!dev.is_empty() && dev.len() < 60, "{}", dev.len());
    }

    #[test]
    fn malformed_rows_name_the_line() {
        let error = parse_text("1\t2\tok\n2\tpositive\ttext\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "snippets.txt:2: mean rating `positive` is not a number"
        );
        let error = parse_text("1\t2\tok\n\n3 2 text\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "snippets.txt:3: expected `id<TAB>mean rating<TAB>text`, found 1 field(s)"
        );
        let error = parse_text("1\t2\tok\n2\t-2\tok\n").unwrap_err();
        assert_eq!(error.to_string(), "snippets.txt: no dev examples");
    }
}
