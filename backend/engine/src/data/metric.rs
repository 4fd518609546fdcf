//! Official GLUE/SuperGLUE metrics, computed from a confusion matrix, and the majority baseline.

use super::{Example, label_counts};
use crate::error::{Result, invalid};

/// A task's official metric (light-peft-spec.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Accuracy (SST-2, QNLI, MNLI, RTE, WNLI, BoolQ).
    Accuracy,
    /// Binary F1 of label 1, as sklearn computes it (MultiRC).
    F1,
    /// Matthews correlation (CoLA).
    Matthews,
    /// Accuracy, binary F1 of label 1 and their mean (MRPC, QQP).
    AccuracyAndF1,
    /// Accuracy, macro F1 and their mean (CB).
    AccuracyAndMacroF1,
    /// SuperGLUE MultiRC: binary F1 over every answer (the reference's number, which is also the
    /// official F1a) and exact match per question.
    F1AndExactMatch,
}

impl Metric {
    /// The numbers this metric reports, in display order.
    pub fn measures(self) -> &'static [Measure] {
        match self {
            Metric::Accuracy => &[Measure::Accuracy],
            Metric::F1 => &[Measure::F1],
            Metric::Matthews => &[Measure::Matthews],
            Metric::AccuracyAndF1 => &[Measure::Accuracy, Measure::F1, Measure::Combined],
            Metric::AccuracyAndMacroF1 => &[Measure::Accuracy, Measure::MacroF1, Measure::Combined],
            Metric::F1AndExactMatch => &[Measure::F1, Measure::ExactMatch],
        }
    }

    /// The number that picks the best checkpoint. The reference code tracks accuracy for every
    /// task but MultiRC (F1) and CoLA, where it asks for accuracy that its metric does not
    /// report (spec §11); Matthews correlation is CoLA's own number.
    pub fn primary(self) -> Measure {
        match self {
            Metric::F1 | Metric::F1AndExactMatch => Measure::F1,
            Metric::Matthews => Measure::Matthews,
            Metric::Accuracy | Metric::AccuracyAndF1 | Metric::AccuracyAndMacroF1 => {
                Measure::Accuracy
            }
        }
    }
}

/// One number a metric reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Fraction of predictions equal to the gold label.
    Accuracy,
    /// F1 of label 1 against the rest; 0 when nothing is predicted 1 correctly.
    F1,
    /// Unweighted mean of per-label F1 over the labels present in the gold labels or the
    /// predictions (sklearn's `average="macro"` default label set).
    MacroF1,
    /// Matthews correlation coefficient (multi-class form); 0 when it is undefined, e.g. when all
    /// predictions or all gold labels are one label.
    Matthews,
    /// Mean of accuracy and the F1 reported beside it (Hugging Face's `combined_score`).
    Combined,
    /// Fraction of questions whose every answer is predicted right (MultiRC's EM).
    ExactMatch,
}

impl Measure {
    /// The measure's key, as Hugging Face's metrics name it (`macro_f1` is CB's `f1`).
    pub fn key(self) -> &'static str {
        match self {
            Measure::Accuracy => "accuracy",
            Measure::F1 => "f1",
            Measure::MacroF1 => "macro_f1",
            Measure::Matthews => "matthews_correlation",
            Measure::Combined => "combined_score",
            Measure::ExactMatch => "exact_match",
        }
    }
}

/// The numbers of one metric on one set of predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValues {
    metric: Metric,
    values: Vec<(Measure, f64)>,
}

impl MetricValues {
    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Each of [`Metric::measures`] with its value, in that order.
    pub fn values(&self) -> &[(Measure, f64)] {
        &self.values
    }

    /// The value of one measure, if the metric reports it.
    pub fn get(&self, measure: Measure) -> Option<f64> {
        self.values
            .iter()
            .find(|(m, _)| *m == measure)
            .map(|(_, value)| *value)
    }

    /// The value of [`Metric::primary`].
    pub fn primary(&self) -> f64 {
        // Only `score` builds these, from `Metric::measures`, which holds the primary measure.
        self.get(self.metric.primary())
            .expect("every metric reports its primary measure")
    }
}

/// Scores predicted labels against gold labels with a task's metric.
///
/// Fails when the slices differ in length or are empty, or when the metric needs the questions
/// answers belong to ([`score_grouped`]).
pub fn score(metric: Metric, predictions: &[usize], gold: &[usize]) -> Result<MetricValues> {
    score_grouped(metric, predictions, gold, &[])
}

/// [`score`], with the question each example answers (`groups`, one per example, or empty
/// where the metric has no per-question measure).
pub fn score_grouped(
    metric: Metric,
    predictions: &[usize],
    gold: &[usize],
    groups: &[Option<u32>],
) -> Result<MetricValues> {
    let grouped = metric.measures().contains(&Measure::ExactMatch);
    if grouped && (groups.len() != gold.len() || groups.iter().any(Option::is_none)) {
        return Err(invalid(
            "predictions",
            "exact match needs the question of every answer",
        ));
    }
    if predictions.len() != gold.len() {
        return Err(invalid(
            "predictions",
            format!(
                "{} predictions for {} gold labels",
                predictions.len(),
                gold.len()
            ),
        ));
    }
    if gold.is_empty() {
        return Err(invalid("predictions", "nothing to score"));
    }
    let confusion = Confusion::new(predictions, gold);
    let values = metric
        .measures()
        .iter()
        .map(|&measure| {
            let value = match measure {
                Measure::Accuracy => confusion.accuracy(),
                Measure::F1 => confusion.f1(1),
                Measure::MacroF1 => confusion.macro_f1(),
                Measure::Matthews => confusion.matthews(),
                Measure::Combined => {
                    let f1 = match metric {
                        Metric::AccuracyAndMacroF1 => confusion.macro_f1(),
                        _ => confusion.f1(1),
                    };
                    (confusion.accuracy() + f1) / 2.0
                }
                Measure::ExactMatch => exact_match(predictions, gold, groups),
            };
            (measure, value)
        })
        .collect();
    Ok(MetricValues { metric, values })
}

/// Fraction of groups (questions) in which every prediction equals its gold label.
fn exact_match(predictions: &[usize], gold: &[usize], groups: &[Option<u32>]) -> f64 {
    let mut right = std::collections::BTreeMap::new();
    for ((p, g), group) in predictions.iter().zip(gold).zip(groups) {
        *right.entry(*group).or_insert(true) &= p == g;
    }
    right.values().filter(|&&all| all).count() as f64 / right.len().max(1) as f64
}

/// What always predicting one label scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// The label predicted: the most frequent in train (the lowest index on a tie).
    pub label: usize,
    /// Its scores on dev.
    pub values: MetricValues,
}

/// See [`Dataset::majority_baseline`](super::Dataset::majority_baseline).
pub(crate) fn majority_baseline(
    train: &[Example],
    dev: &[Example],
    num_labels: usize,
    metric: Metric,
) -> Result<Baseline> {
    let counts = label_counts(train, num_labels);
    // `max_by_key` keeps the last maximum; reversing makes ties go to the lowest label.
    let label = counts
        .iter()
        .enumerate()
        .rev()
        .max_by_key(|(_, count)| **count)
        .map_or(0, |(label, _)| label);
    let gold: Vec<usize> = dev.iter().map(|example| example.label).collect();
    let groups: Vec<Option<u32>> = dev.iter().map(|example| example.group).collect();
    let values = score_grouped(metric, &vec![label; gold.len()], &gold, &groups)?;
    Ok(Baseline { label, values })
}

/// Counts of (gold, predicted) label pairs.
struct Confusion {
    labels: usize,
    /// Row-major: `counts[gold * labels + predicted]`.
    counts: Vec<usize>,
    total: usize,
}

impl Confusion {
    fn new(predictions: &[usize], gold: &[usize]) -> Self {
        let labels = predictions
            .iter()
            .chain(gold)
            .max()
            .map_or(0, |max| max + 1);
        let mut counts = vec![0; labels * labels];
        for (&p, &g) in predictions.iter().zip(gold) {
            counts[g * labels + p] += 1;
        }
        Confusion {
            labels,
            counts,
            total: gold.len(),
        }
    }

    fn count(&self, gold: usize, predicted: usize) -> usize {
        self.counts[gold * self.labels + predicted]
    }

    fn gold_total(&self, label: usize) -> usize {
        (0..self.labels).map(|p| self.count(label, p)).sum()
    }

    fn predicted_total(&self, label: usize) -> usize {
        (0..self.labels).map(|g| self.count(g, label)).sum()
    }

    fn correct(&self) -> usize {
        (0..self.labels).map(|label| self.count(label, label)).sum()
    }

    fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.total as f64
    }

    /// F1 of one label against the rest; 0 without a true positive, as sklearn's
    /// `zero_division` default gives.
    fn f1(&self, label: usize) -> f64 {
        if label >= self.labels {
            return 0.0;
        }
        let tp = self.count(label, label);
        if tp == 0 {
            return 0.0;
        }
        // 2·P·R / (P + R) rewritten over counts: 2tp / (2tp + fp + fn).
        let wrong = self.gold_total(label) + self.predicted_total(label) - 2 * tp;
        (2 * tp) as f64 / (2 * tp + wrong) as f64
    }

    fn macro_f1(&self) -> f64 {
        let present: Vec<usize> = (0..self.labels)
            .filter(|&label| self.gold_total(label) + self.predicted_total(label) > 0)
            .collect();
        present.iter().map(|&label| self.f1(label)).sum::<f64>() / present.len() as f64
    }

    fn matthews(&self) -> f64 {
        let s = self.total as f64;
        let c = self.correct() as f64;
        let (mut tp_sum, mut p_sq, mut t_sq) = (0.0, 0.0, 0.0);
        for label in 0..self.labels {
            let t = self.gold_total(label) as f64;
            let p = self.predicted_total(label) as f64;
            tp_sum += t * p;
            p_sq += p * p;
            t_sq += t * t;
        }
        let denominator = ((s * s - p_sq) * (s * s - t_sq)).sqrt();
        if denominator == 0.0 {
            return 0.0;
        }
        (c * s - tp_sum) / denominator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(metric: Metric, predictions: &[usize], gold: &[usize]) -> MetricValues {
        score(metric, predictions, gold).unwrap()
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn multirc_scores_f1_over_answers_and_exact_match_per_question() {
        // Question 0: answers (gold 1, 0, 1) predicted (1, 0, 1): right. Question 1: (0, 1)
        // predicted (1, 1): wrong. Question 2: (0) predicted (0): right.
        let gold = [1, 0, 1, 0, 1, 0];
        let predictions = [1, 0, 1, 1, 1, 0];
        let groups = [0, 0, 0, 1, 1, 2].map(Some);
        let values = score_grouped(Metric::F1AndExactMatch, &predictions, &gold, &groups).unwrap();
        // tp 3, fp 1, fn 0: precision 3/4, recall 1, F1 = 6/7.
        assert!((values.get(Measure::F1).unwrap() - 6.0 / 7.0).abs() < 1e-12);
        assert!((values.get(Measure::ExactMatch).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(values.primary(), values.get(Measure::F1).unwrap());
        // Without the questions there is no exact match to report.
        let error = score(Metric::F1AndExactMatch, &predictions, &gold).unwrap_err();
        assert!(
            error.to_string().contains("question of every answer"),
            "{error}"
        );
        let partial = [Some(0), None, Some(0), Some(1), Some(1), Some(2)];
        assert!(score_grouped(Metric::F1AndExactMatch, &predictions, &gold, &partial).is_err());
    }

    #[test]
    fn binary_counts_give_hand_computed_accuracy_f1_and_matthews() {
        // tp 3, fn 1, fp 1, tn 3.
        let gold = [1, 1, 1, 0, 0, 0, 0, 1];
        let predictions = [1, 0, 1, 0, 1, 0, 0, 1];
        let v = values(Metric::AccuracyAndF1, &predictions, &gold);
        assert_close(v.get(Measure::Accuracy).unwrap(), 0.75);
        assert_close(v.get(Measure::F1).unwrap(), 0.75);
        assert_close(v.get(Measure::Combined).unwrap(), 0.75);
        assert_eq!(v.get(Measure::Matthews), None);
        // (tp·tn − fp·fn) / √(4·4·4·4) = 8 / 16.
        assert_close(values(Metric::Matthews, &predictions, &gold).primary(), 0.5);

        // tp 2, fp 1, fn 0, tn 2: F1 = 4/5, MCC = 4/√(3·2·3·2).
        let gold = [1, 1, 0, 0, 0];
        let predictions = [1, 1, 1, 0, 0];
        let v = values(Metric::AccuracyAndF1, &predictions, &gold);
        assert_close(v.get(Measure::F1).unwrap(), 0.8);
        assert_close(v.get(Measure::Combined).unwrap(), 0.8);
        assert_close(
            values(Metric::Matthews, &predictions, &gold).primary(),
            4.0 / 6.0,
        );
    }

    #[test]
    fn degenerate_cases_score_zero_not_nan() {
        // All predictions one label: MCC undefined, reported 0.
        let v = values(Metric::Matthews, &[1, 1, 1, 1], &[1, 0, 1, 0]);
        assert_eq!(v.primary(), 0.0);
        // All gold labels one label, predicted perfectly: still undefined.
        assert_eq!(values(Metric::Matthews, &[0, 0], &[0, 0]).primary(), 0.0);
        // Fully inverted.
        assert_close(values(Metric::Matthews, &[1, 0], &[0, 1]).primary(), -1.0);
        // No positive predictions.
        assert_eq!(values(Metric::F1, &[0, 0, 0], &[1, 0, 1]).primary(), 0.0);
        // No positives anywhere.
        assert_eq!(values(Metric::F1, &[0, 0], &[0, 0]).primary(), 0.0);
        // Positives predicted, none correct.
        assert_eq!(values(Metric::F1, &[1, 1], &[0, 0]).primary(), 0.0);
    }

    #[test]
    fn macro_f1_averages_over_labels_seen_in_gold_or_predictions() {
        // Label 0: tp 1, fp 1, fn 1 → 1/2. Label 1: tp 2, fp 1 → 4/5. Label 2: tp 1, fn 1 → 2/3.
        let gold = [0, 0, 1, 1, 2, 2];
        let predictions = [0, 1, 1, 1, 2, 0];
        let v = values(Metric::AccuracyAndMacroF1, &predictions, &gold);
        let macro_f1 = (0.5 + 0.8 + 2.0 / 3.0) / 3.0;
        assert_close(v.get(Measure::Accuracy).unwrap(), 4.0 / 6.0);
        assert_close(v.get(Measure::MacroF1).unwrap(), macro_f1);
        assert_close(
            v.get(Measure::Combined).unwrap(),
            (4.0 / 6.0 + macro_f1) / 2.0,
        );
        assert_eq!(v.primary(), v.get(Measure::Accuracy).unwrap());
        // A label in neither is left out; one only predicted counts with F1 0.
        let v = values(Metric::AccuracyAndMacroF1, &[0, 0, 1], &[0, 0, 1]);
        assert_close(v.get(Measure::MacroF1).unwrap(), 1.0);
        let v = values(Metric::AccuracyAndMacroF1, &[0, 2], &[0, 1]);
        assert_close(v.get(Measure::MacroF1).unwrap(), 1.0 / 3.0);
    }

    #[test]
    fn matthews_takes_the_multi_class_form() {
        // c = 4, s = 6, t = [2, 2, 2], p = [2, 3, 1]: (24 − 12) / √((36 − 14)(36 − 12)).
        let v = values(Metric::Matthews, &[0, 1, 1, 1, 2, 0], &[0, 0, 1, 1, 2, 2]);
        assert_close(v.primary(), 12.0 / (22.0f64 * 24.0).sqrt());
    }

    #[test]
    fn mismatched_or_empty_inputs_are_errors() {
        let error = score(Metric::Accuracy, &[0, 1], &[0]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("2 predictions for 1 gold labels"),
            "{error}"
        );
        assert!(score(Metric::Accuracy, &[], &[]).is_err());
    }

    #[test]
    fn primary_measures_follow_the_reference_best_tracking() {
        assert_eq!(Metric::Accuracy.primary(), Measure::Accuracy);
        assert_eq!(Metric::AccuracyAndF1.primary(), Measure::Accuracy);
        assert_eq!(Metric::AccuracyAndMacroF1.primary(), Measure::Accuracy);
        assert_eq!(Metric::F1.primary(), Measure::F1);
        assert_eq!(Metric::Matthews.primary(), Measure::Matthews);
        for metric in [
            Metric::Accuracy,
            Metric::F1,
            Metric::Matthews,
            Metric::AccuracyAndF1,
            Metric::AccuracyAndMacroF1,
        ] {
            assert!(metric.measures().contains(&metric.primary()));
        }
    }

    fn examples(labels: &[usize]) -> Vec<Example> {
        labels
            .iter()
            .map(|&label| Example {
                id: String::new(),
                text_a: String::new(),
                text_b: None,
                label,
                group: None,
            })
            .collect()
    }

    #[test]
    fn majority_baseline_predicts_the_most_frequent_train_label_on_dev() {
        let train = examples(&[1, 1, 0, 1, 2]);
        let dev = examples(&[0, 1, 1, 0, 0]);
        let baseline = majority_baseline(&train, &dev, 3, Metric::AccuracyAndF1).unwrap();
        assert_eq!(baseline.label, 1);
        assert_close(baseline.values.get(Measure::Accuracy).unwrap(), 0.4);
        // tp 2, fp 3: 4 / 7.
        assert_close(baseline.values.get(Measure::F1).unwrap(), 4.0 / 7.0);
        // A constant guess has no correlation.
        let baseline = majority_baseline(&train, &dev, 3, Metric::Matthews).unwrap();
        assert_eq!(baseline.values.primary(), 0.0);
        // Ties go to the lowest label.
        let tied = majority_baseline(&examples(&[2, 1, 1, 2]), &dev, 3, Metric::Accuracy).unwrap();
        assert_eq!(tied.label, 1);
    }
}
