//! Official GLUE/SuperGLUE metrics, computed from a confusion matrix (or, for regression, from
//! the predicted and gold numbers), and the majority baseline.

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
    /// Regression (STS-B): Pearson and Spearman correlation and their mean.
    Correlation,
    /// SuperGLUE ReCoRD: per query, the candidate entity scored highest for label 1, its SQuAD
    /// token F1 and exact match against the gold answers (the best over them), averaged over
    /// queries.
    Record,
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
            Metric::Correlation => &[Measure::Pearson, Measure::Spearman, Measure::Combined],
            Metric::Record => &[Measure::AnswerF1, Measure::AnswerExactMatch],
        }
    }

    /// Whether the metric scores numbers (regression) rather than labels.
    pub fn scores_values(self) -> bool {
        self == Metric::Correlation
    }

    /// The number that picks the best checkpoint. The reference code tracks accuracy for every
    /// task but MultiRC (F1) and CoLA, where it asks for accuracy that its metric does not
    /// report (spec §11); Matthews correlation is CoLA's own number.
    pub fn primary(self) -> Measure {
        match self {
            Metric::F1 | Metric::F1AndExactMatch => Measure::F1,
            Metric::Matthews => Measure::Matthews,
            // The reference has no regression task; Pearson is GLUE's first STS-B number.
            Metric::Correlation => Measure::Pearson,
            Metric::Record => Measure::AnswerF1,
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
    /// Mean of the two numbers reported beside it (Hugging Face's `combined_score`): accuracy
    /// and F1, or Pearson and Spearman.
    Combined,
    /// Fraction of questions whose every answer is predicted right (MultiRC's EM).
    ExactMatch,
    /// Pearson correlation of predicted and gold numbers; 0 when either is constant.
    Pearson,
    /// Spearman rank correlation (Pearson of the ranks, ties given their mean rank); 0 when
    /// either side is constant.
    Spearman,
    /// Mean over queries of the chosen answer's token F1 after SQuAD's normalisation
    /// (ReCoRD's `f1`).
    AnswerF1,
    /// Fraction of queries whose chosen answer equals a gold answer after SQuAD's
    /// normalisation (ReCoRD's `exact_match`).
    AnswerExactMatch,
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
            Measure::Pearson => "pearson",
            Measure::Spearman => "spearmanr",
            Measure::AnswerF1 => "f1",
            Measure::AnswerExactMatch => "exact_match",
        }
    }

    /// Whether the measure is a fraction shown as a percentage (accuracy, F1, exact match)
    /// rather than a correlation in [-1, 1].
    pub fn is_fraction(self) -> bool {
        !matches!(
            self,
            Measure::Matthews | Measure::Pearson | Measure::Spearman
        )
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
    if metric.scores_values() {
        return Err(invalid(
            "predictions",
            "a regression metric scores numbers, not labels",
        ));
    }
    if metric == Metric::Record {
        return Err(invalid(
            "predictions",
            "ReCoRD ranks each query's candidates by score, not by predicted label",
        ));
    }
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
                Measure::Pearson
                | Measure::Spearman
                | Measure::AnswerF1
                | Measure::AnswerExactMatch => {
                    unreachable!("refused above: these score numbers or ranked candidates")
                }
            };
            (measure, value)
        })
        .collect();
    Ok(MetricValues { metric, values })
}

/// Scores predicted numbers against gold numbers with a regression metric.
///
/// Fails for a label metric, when the slices differ in length, or when they are empty.
pub fn score_values(metric: Metric, predictions: &[f64], gold: &[f64]) -> Result<MetricValues> {
    if !metric.scores_values() {
        return Err(invalid(
            "predictions",
            "a classification metric scores labels, not numbers",
        ));
    }
    if predictions.len() != gold.len() {
        return Err(invalid(
            "predictions",
            format!(
                "{} predictions for {} gold numbers",
                predictions.len(),
                gold.len()
            ),
        ));
    }
    if gold.is_empty() {
        return Err(invalid("predictions", "nothing to score"));
    }
    let pearson_value = pearson(predictions, gold);
    let spearman_value = pearson(&ranks(predictions), &ranks(gold));
    Ok(MetricValues {
        metric,
        values: vec![
            (Measure::Pearson, pearson_value),
            (Measure::Spearman, spearman_value),
            (Measure::Combined, (pearson_value + spearman_value) / 2.0),
        ],
    })
}

/// What choosing one candidate answer earns against its query's gold answers: the best exact
/// match and token F1 over them, after SQuAD's normalisation (as ReCoRD's official script).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Credit {
    /// 1 when the candidate equals a gold answer, else 0.
    pub exact_match: f64,
    /// The best token F1 against a gold answer, in [0, 1].
    pub f1: f64,
}

impl Credit {
    /// The credit of `candidate` against `answers` (0 and 0 without answers).
    pub fn of(candidate: &str, answers: &[&str]) -> Credit {
        let candidate = normalized_tokens(candidate);
        answers
            .iter()
            .map(|answer| {
                let answer = normalized_tokens(answer);
                Credit {
                    exact_match: f64::from(u8::from(candidate == answer)),
                    f1: token_f1(&candidate, &answer),
                }
            })
            .fold(Credit::default(), |best, c| Credit {
                exact_match: best.exact_match.max(c.exact_match),
                f1: best.f1.max(c.f1),
            })
    }
}

/// SQuAD's `normalize_answer`, as tokens: lower case, ASCII punctuation removed, the words
/// "a", "an" and "the" removed, split on white space.
fn normalized_tokens(text: &str) -> Vec<String> {
    let lowered: String = text
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // The reference's `\b(a|an|the)\b`: a whole run of word characters equal to an article.
    let mut spaced = String::with_capacity(lowered.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in lowered.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut spaced);
            spaced.push(c);
        }
    }
    flush(&mut word, &mut spaced);
    spaced.split_whitespace().map(str::to_string).collect()
}

/// SQuAD's token F1: the harmonic mean of the shared tokens' precision and recall (counted with
/// multiplicity); 0 when no token is shared.
fn token_f1(predicted: &[String], gold: &[String]) -> f64 {
    let mut unmatched: Vec<&String> = gold.iter().collect();
    let mut shared = 0usize;
    for token in predicted {
        if let Some(at) = unmatched.iter().position(|g| *g == token) {
            unmatched.swap_remove(at);
            shared += 1;
        }
    }
    if shared == 0 {
        return 0.0;
    }
    let precision = shared as f64 / predicted.len() as f64;
    let recall = shared as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Scores ranked candidates (ReCoRD): in each group (query) the candidate with the highest
/// score is chosen, the first of a tie, and the queries' mean [`Credit`] reported.
///
/// `scores`, `groups` and `credits` hold one entry per candidate. Fails for another metric, for
/// slices of different lengths, for a candidate without a group, or when there is none.
pub fn score_ranked(
    metric: Metric,
    scores: &[f64],
    groups: &[Option<u32>],
    credits: &[Credit],
) -> Result<MetricValues> {
    if metric != Metric::Record {
        return Err(invalid(
            "predictions",
            format!("{metric:?} scores labels or numbers, not ranked candidates"),
        ));
    }
    if scores.len() != groups.len() || scores.len() != credits.len() {
        return Err(invalid(
            "predictions",
            format!(
                "{} scores for {} groups and {} credits",
                scores.len(),
                groups.len(),
                credits.len()
            ),
        ));
    }
    if scores.is_empty() {
        return Err(invalid("predictions", "nothing to score"));
    }
    let mut chosen: std::collections::BTreeMap<u32, (f64, Credit)> = Default::default();
    for ((&score, group), &credit) in scores.iter().zip(groups).zip(credits) {
        let group = group.ok_or_else(|| invalid("predictions", "a candidate without its query"))?;
        let best = chosen.entry(group).or_insert((score, credit));
        if score > best.0 {
            *best = (score, credit);
        }
    }
    let queries = chosen.len() as f64;
    let f1 = chosen.values().map(|(_, c)| c.f1).sum::<f64>() / queries;
    let exact = chosen.values().map(|(_, c)| c.exact_match).sum::<f64>() / queries;
    Ok(MetricValues {
        metric,
        values: vec![(Measure::AnswerF1, f1), (Measure::AnswerExactMatch, exact)],
    })
}

/// Pearson correlation; 0 when either side has no variance (as for a constant guess).
fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mean_x = x.iter().sum::<f64>() / n;
    let mean_y = y.iter().sum::<f64>() / n;
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mean_x, b - mean_y);
        xy += dx * dy;
        xx += dx * dx;
        yy += dy * dy;
    }
    if xx == 0.0 || yy == 0.0 {
        return 0.0;
    }
    xy / (xx * yy).sqrt()
}

/// 1-based ranks, tied values sharing the mean of their ranks (scipy's `rankdata` default).
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; their mean is (start + 1 + end) / 2.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &index in &order[start..end] {
            ranks[index] = rank;
        }
        start = end;
    }
    ranks
}

/// Fraction of groups (questions) in which every prediction equals its gold label.
fn exact_match(predictions: &[usize], gold: &[usize], groups: &[Option<u32>]) -> f64 {
    let mut right = std::collections::BTreeMap::new();
    for ((p, g), group) in predictions.iter().zip(gold).zip(groups) {
        *right.entry(*group).or_insert(true) &= p == g;
    }
    right.values().filter(|&&all| all).count() as f64 / right.len().max(1) as f64
}

/// What a constant prediction scores: one label, one number (regression), or one score for
/// every candidate (ReCoRD).
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// The constant prediction.
    pub guess: Guess,
    /// Its scores on dev.
    pub values: MetricValues,
}

/// A baseline's constant prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Guess {
    /// The most frequent train label (the lowest index on a tie).
    Label(usize),
    /// The mean of the train numbers (regression).
    Value(f64),
    /// The same score for every candidate, so each query's first candidate (ReCoRD).
    FirstCandidate,
}

/// See [`Dataset::majority_baseline`](super::Dataset::majority_baseline).
pub(crate) fn majority_baseline(
    train: &[Example],
    dev: &[Example],
    num_labels: usize,
    metric: Metric,
) -> Result<Baseline> {
    if metric.scores_values() {
        let number = |example: &Example| f64::from(example.value.unwrap_or(0.0));
        let mean = train.iter().map(number).sum::<f64>() / train.len().max(1) as f64;
        let gold: Vec<f64> = dev.iter().map(number).collect();
        let values = score_values(metric, &vec![mean; gold.len()], &gold)?;
        return Ok(Baseline {
            guess: Guess::Value(mean),
            values,
        });
    }
    if metric == Metric::Record {
        // A constant model scores every candidate alike, so each query's first one is chosen.
        let groups: Vec<Option<u32>> = dev.iter().map(|example| example.group).collect();
        let credits: Vec<Credit> = dev
            .iter()
            .map(|example| example.credit.unwrap_or_default())
            .collect();
        let values = score_ranked(metric, &vec![0.0; dev.len()], &groups, &credits)?;
        return Ok(Baseline {
            guess: Guess::FirstCandidate,
            values,
        });
    }
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
    Ok(Baseline {
        guess: Guess::Label(label),
        values,
    })
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
            Metric::F1AndExactMatch,
            Metric::Correlation,
        ] {
            assert!(metric.measures().contains(&metric.primary()));
        }
    }

    fn examples(labels: &[usize]) -> Vec<Example> {
        labels
            .iter()
            .map(|&label| Example::labelled(String::new(), String::new(), None, label))
            .collect()
    }

    #[test]
    fn majority_baseline_predicts_the_most_frequent_train_label_on_dev() {
        let train = examples(&[1, 1, 0, 1, 2]);
        let dev = examples(&[0, 1, 1, 0, 0]);
        let baseline = majority_baseline(&train, &dev, 3, Metric::AccuracyAndF1).unwrap();
        assert_eq!(baseline.guess, Guess::Label(1));
        assert_close(baseline.values.get(Measure::Accuracy).unwrap(), 0.4);
        // tp 2, fp 3: 4 / 7.
        assert_close(baseline.values.get(Measure::F1).unwrap(), 4.0 / 7.0);
        // A constant guess has no correlation.
        let baseline = majority_baseline(&train, &dev, 3, Metric::Matthews).unwrap();
        assert_eq!(baseline.values.primary(), 0.0);
        // Ties go to the lowest label.
        let tied = majority_baseline(&examples(&[2, 1, 1, 2]), &dev, 3, Metric::Accuracy).unwrap();
        assert_eq!(tied.guess, Guess::Label(1));
    }

    #[test]
    fn correlations_match_hand_computed_pearson_and_spearman() {
        // x = 1..4 against y = (1, 3, 2, 5): means 2.5 and 2.75; Σdxdy = 5.5, Σdx² = 5,
        // Σdy² = 8.75, so r = 5.5 / √43.75.
        let v = score_values(
            Metric::Correlation,
            &[1.0, 2.0, 3.0, 4.0],
            &[1.0, 3.0, 2.0, 5.0],
        )
        .unwrap();
        let r = 5.5 / 43.75f64.sqrt();
        assert_close(v.get(Measure::Pearson).unwrap(), r);
        // Ranks of y: (1, 3, 2, 4); Σd² = 2, so ρ = 1 − 6·2 / (4·15) = 0.8.
        assert_close(v.get(Measure::Spearman).unwrap(), 0.8);
        assert_close(v.get(Measure::Combined).unwrap(), (r + 0.8) / 2.0);
        assert_eq!(v.primary(), v.get(Measure::Pearson).unwrap());
        // A monotone but non-linear relation: Spearman 1, Pearson below.
        let v = score_values(Metric::Correlation, &[1.0, 2.0, 3.0], &[1.0, 10.0, 100.0]).unwrap();
        assert_close(v.get(Measure::Spearman).unwrap(), 1.0);
        assert!(v.get(Measure::Pearson).unwrap() < 0.99);
        // Ties share their mean rank: (1, 2, 2, 3) ranks to (1, 2.5, 2.5, 4).
        assert_eq!(ranks(&[1.0, 2.0, 2.0, 3.0]), vec![1.0, 2.5, 2.5, 4.0]);
        // A constant prediction has no correlation, not NaN.
        let v = score_values(Metric::Correlation, &[2.0, 2.0], &[1.0, 3.0]).unwrap();
        assert_eq!(v.primary(), 0.0);
        assert_eq!(v.get(Measure::Spearman), Some(0.0));
        // Numbers and labels do not mix.
        assert!(score(Metric::Correlation, &[0], &[0]).is_err());
        assert!(score_values(Metric::Accuracy, &[0.0], &[0.0]).is_err());
        assert!(score_values(Metric::Correlation, &[0.0], &[]).is_err());
    }

    #[test]
    fn the_regression_baseline_guesses_the_train_mean() {
        let numbered = |values: &[f32]| -> Vec<Example> {
            values
                .iter()
                .map(|&v| Example {
                    value: Some(v),
                    ..Example::labelled(String::new(), String::new(), None, 0)
                })
                .collect()
        };
        let baseline = majority_baseline(
            &numbered(&[1.0, 2.0, 6.0]),
            &numbered(&[0.0, 5.0]),
            0,
            Metric::Correlation,
        )
        .unwrap();
        assert_eq!(baseline.guess, Guess::Value(3.0));
        assert_eq!(baseline.values.primary(), 0.0);
    }

    #[test]
    fn squad_normalisation_drops_case_punctuation_and_articles() {
        assert_eq!(
            normalized_tokens("The  U.S. Army's, a"),
            vec!["us", "armys"]
        );
        // An article inside a word is kept; one next to non-ASCII punctuation is a word of its own.
        assert_eq!(
            normalized_tokens("Theatre an—them"),
            vec!["theatre", "—them"]
        );
    }

    #[test]
    fn credit_is_the_best_over_the_gold_answers() {
        let exact = Credit::of("the Obama", &["Barack Obama", "Obama"]);
        assert_eq!(
            exact,
            Credit {
                exact_match: 1.0,
                f1: 1.0
            }
        );
        // "barack hussein obama" vs "barack obama": 2 shared, P = 2/3, R = 1, F1 = 0.8.
        let partial = Credit::of("Barack Hussein Obama", &["Barack Obama", "Michelle"]);
        assert_eq!(partial.exact_match, 0.0);
        assert!((partial.f1 - 0.8).abs() < 1e-12, "{partial:?}");
        assert_eq!(Credit::of("Paris", &[]), Credit::default());
        assert_eq!(Credit::of("Paris", &["London"]).f1, 0.0);
    }

    #[test]
    fn ranked_candidates_score_each_query_by_its_top_candidate() {
        let credit = |exact_match, f1| Credit { exact_match, f1 };
        let values = score_ranked(
            Metric::Record,
            // Query 0 picks its second candidate; query 1 ties and keeps its first.
            &[0.1, 0.9, 0.5, 0.5],
            &[Some(0), Some(0), Some(1), Some(1)],
            &[
                credit(0.0, 0.0),
                credit(1.0, 1.0),
                credit(0.0, 0.5),
                credit(1.0, 1.0),
            ],
        )
        .unwrap();
        assert_eq!(values.get(Measure::AnswerF1), Some(0.75));
        assert_eq!(values.get(Measure::AnswerExactMatch), Some(0.5));
        assert_eq!(values.primary(), 0.75);
        assert!(score_ranked(Metric::Accuracy, &[0.0], &[Some(0)], &[credit(0.0, 0.0)]).is_err());
        assert!(score_ranked(Metric::Record, &[0.0], &[None], &[credit(0.0, 0.0)]).is_err());
        assert!(score(Metric::Record, &[0], &[0]).is_err());
    }
}
