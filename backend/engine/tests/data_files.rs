//! Loading small GLUE, SuperGLUE and BIG-bench files written by the tests: every published
//! layout, label order, metric choice, skipped rows, and errors that name the file and line.

use std::path::{Path, PathBuf};

use lightpeft_engine::data::{
    Credit, Dataset, Example, Guess, Location, Measure, Metric, Objective, TaskFiles, TaskId,
    TaskInputs, load_task, score, score_grouped, score_ranked, score_values,
};
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn user_files(train: &Path, dev: &Path) -> TaskFiles {
    TaskFiles::TrainDev {
        train: train.to_path_buf(),
        dev: dev.to_path_buf(),
    }
}

/// Loads a task from a train and a dev file with the given contents.
fn load(task: TaskId, train: &str, dev: &str) -> lightpeft_engine::Result<Dataset> {
    let dir = TempDir::new().unwrap();
    let (train_name, dev_name) = match task.spec().inputs {
        TaskInputs::UserFiles { train, dev } => (train, dev),
        other => panic!("{task} reads {other:?}"),
    };
    let files = user_files(&write(&dir, train_name, train), &write(&dir, dev_name, dev));
    load_task(task.spec(), &files)
}

/// The error of loading a good train file and a bad dev file, as text.
fn dev_error(task: TaskId, train: &str, dev: &str) -> String {
    load(task, train, dev).unwrap_err().to_string()
}

fn pairs(examples: &[Example]) -> Vec<(&str, Option<&str>, usize)> {
    examples
        .iter()
        .map(|e| (e.text_a.as_str(), e.text_b.as_deref(), e.label))
        .collect()
}

const SST2: &str = "sentence\tlabel\n\
    it 's a charming and \"often\" affecting journey . \t1\n\
    unflinchingly bleak and desperate \t0\n";

#[test]
fn glue_sst2_reads_columns_by_header_and_keeps_quotes() {
    let reordered = "label\tsentence\n0\tbad , bad\n";
    let data = load(TaskId::GlueSst2, SST2, reordered).unwrap();
    assert_eq!(
        pairs(&data.train),
        [
            (
                "it 's a charming and \"often\" affecting journey . ",
                None,
                1
            ),
            ("unflinchingly bleak and desperate ", None, 0),
        ]
    );
    assert_eq!(pairs(&data.dev), [("bad , bad", None, 0)]);
    assert_eq!(data.labels, ["negative", "positive"]);
    assert_eq!(data.metric, Metric::Accuracy);
    assert_eq!(data.train[1].id, "train.tsv line 3");
    assert_eq!(data.skipped.total(), 0);
}

const COLA: &str = "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n\
    gj04\t0\t*\tThey drank the pub.\n";

#[test]
fn glue_cola_has_no_header_and_is_scored_by_matthews() {
    let data = load(
        TaskId::GlueCola,
        COLA,
        "cj99\t1\t\tThe more you eat, the fatter you get.\n",
    )
    .unwrap();
    assert_eq!(
        pairs(&data.train),
        [
            (
                "Our friends won't buy this analysis, let alone the next one we propose.",
                None,
                1
            ),
            ("They drank the pub.", None, 0),
        ]
    );
    assert_eq!(data.train[0].id, "train.tsv line 1");
    assert_eq!(data.labels, ["unacceptable", "acceptable"]);
    assert_eq!(data.metric, Metric::Matthews);
    // The majority baseline shows a constant guess has no correlation.
    let baseline = data.majority_baseline().unwrap();
    assert_eq!(baseline.values.primary(), 0.0);
}

#[test]
fn glue_mrpc_reads_its_odd_header_past_a_byte_order_mark() {
    let train = "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n\
        1\t702876\t702977\tAmrozi accused his brother .\tReferring to him as only \" the witness \" .\n\
        0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 .\n";
    let data = load(TaskId::GlueMrpc, train, train).unwrap();
    assert_eq!(
        pairs(&data.train),
        [
            (
                "Amrozi accused his brother .",
                Some("Referring to him as only \" the witness \" ."),
                1
            ),
            (
                "Yucaipa owned Dominick 's .",
                Some("Yucaipa bought Dominick 's in 1995 ."),
                0
            ),
        ]
    );
    assert_eq!(data.labels, ["not_equivalent", "equivalent"]);
    assert_eq!(data.metric, Metric::AccuracyAndF1);
    let measures: Vec<Measure> = data.metric.measures().to_vec();
    assert_eq!(
        measures,
        [Measure::Accuracy, Measure::F1, Measure::Combined]
    );
}

#[test]
fn glue_qqp_counts_its_known_broken_rows_instead_of_failing() {
    let train = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n\
        0\t1\t2\tHow do I learn Rust?\tWhat is the best way to learn Rust?\t1\n\
        1\t3\t4\tWhat is a line\n\
        break?\tWhy?\t0\n\
        2\t5\t6\tIs it raining?\tIs the sky blue?\t0\n";
    let dev = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t8\t9\tA?\tB?\t0\n";
    let data = load(TaskId::GlueQqp, train, dev).unwrap();
    assert_eq!(
        pairs(&data.train),
        [
            (
                "How do I learn Rust?",
                Some("What is the best way to learn Rust?"),
                1
            ),
            ("Is it raining?", Some("Is the sky blue?"), 0),
        ]
    );
    assert_eq!(data.labels, ["not_duplicate", "duplicate"]);
    assert_eq!(data.metric, Metric::AccuracyAndF1);
    assert_eq!(data.skipped.total(), 2);
    let group = &data.skipped.groups[0];
    assert_eq!(group.at, [Location::Line(3), Location::Line(4)]);
    assert!(group.path.ends_with("train.tsv"));
    assert!(group.reason.contains("QQP"), "{}", group.reason);
    let report = data.skipped.to_string();
    assert!(report.contains("train.tsv: skipped 2 row(s)"), "{report}");
}

#[test]
fn glue_mnli_finds_its_columns_in_train_and_dev_matched_headers() {
    let train = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t\
        sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n\
        0\t31193\t31193n\tgovernment\t( x )\t( y )\t(ROOT x)\t(ROOT y)\t\
        Conceptually cream skimming has two basic dimensions.\tProduct and geography are what make cream skimming work. \tneutral\tneutral\n";
    let dev = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t\
        sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n\
        0\t63735\t63735n\tslate\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tThe new rights are nice enough\tEveryone really likes the newest benefits \
        \tneutral\tentailment\tneutral\tneutral\tneutral\tneutral\n\
        1\t91383\t91383c\tgovernment\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tThis site includes a list.\tThe site does not have a list.\
        \tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\n";
    let data = load(TaskId::GlueMnli, train, dev).unwrap();
    assert_eq!(data.labels, ["entailment", "neutral", "contradiction"]);
    assert_eq!(
        pairs(&data.train),
        [(
            "Conceptually cream skimming has two basic dimensions.",
            Some("Product and geography are what make cream skimming work. "),
            1
        )]
    );
    assert_eq!(
        pairs(&data.dev)[1],
        (
            "This site includes a list.",
            Some("The site does not have a list."),
            2
        )
    );
    assert_eq!(data.dev[0].id, "dev_matched.tsv line 2");
}

#[test]
fn glue_qnli_rte_and_wnli_map_labels_in_hugging_face_order() {
    let qnli = "index\tquestion\tsentence\tlabel\n\
        0\tWhen did it open?\tIt opened in 1990.\tentailment\n\
        1\tWho?\tNobody knows.\tnot_entailment\n";
    let data = load(TaskId::GlueQnli, qnli, qnli).unwrap();
    assert_eq!(
        pairs(&data.train),
        [
            ("When did it open?", Some("It opened in 1990."), 0),
            ("Who?", Some("Nobody knows."), 1),
        ]
    );

    let rte = "index\tsentence1\tsentence2\tlabel\n\
        0\tNo weapons were found in Iraq.\tWeapons were found in Iraq.\tnot_entailment\n\
        1\tA cat sat.\tAn animal sat.\tentailment\n";
    let data = load(TaskId::GlueRte, rte, rte).unwrap();
    assert_eq!(data.labels, ["entailment", "not_entailment"]);
    assert_eq!(
        data.train.iter().map(|e| e.label).collect::<Vec<_>>(),
        [1, 0]
    );

    // WNLI writes indices, and its label 1 is entailment.
    let wnli = "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin through a carrot.\tThe carrot had a hole.\t1\n";
    let data = load(TaskId::GlueWnli, wnli, wnli).unwrap();
    assert_eq!(data.labels, ["not_entailment", "entailment"]);
    assert_eq!(data.train[0].label, 1);
}

#[test]
fn superglue_boolq_cb_and_rte_read_json_lines() {
    let boolq = r#"{"question": "do iran and afghanistan speak the same language", "passage": "Persian language -- Persian is spoken in Iran and Afghanistan.", "idx": 0, "label": true}
{"question": "is the sky green", "passage": "The sky is blue.", "idx": 1, "label": false}
"#;
    let data = load(TaskId::SuperGlueBoolq, boolq, boolq).unwrap();
    assert_eq!(
        pairs(&data.train),
        [
            (
                "do iran and afghanistan speak the same language",
                Some("Persian language -- Persian is spoken in Iran and Afghanistan."),
                1
            ),
            ("is the sky green", Some("The sky is blue."), 0),
        ]
    );
    assert_eq!(data.labels, ["False", "True"]);
    assert_eq!(data.train[1].id, "train.jsonl line 2");

    let cb = r#"{"premise": "It was a complex language.", "hypothesis": "the language was peeled down", "label": "contradiction", "idx": 0}

{"premise": "A", "hypothesis": "B", "label": "neutral", "idx": 1}
{"premise": "C", "hypothesis": "D", "label": "entailment", "idx": 2}
"#;
    let data = load(TaskId::SuperGlueCb, cb, cb).unwrap();
    assert_eq!(data.labels, ["entailment", "contradiction", "neutral"]);
    assert_eq!(
        data.train.iter().map(|e| e.label).collect::<Vec<_>>(),
        [1, 2, 0]
    );
    // The blank line holds no example but still counts for line numbers.
    assert_eq!(data.train[1].id, "train.jsonl line 3");
    assert_eq!(data.metric, Metric::AccuracyAndMacroF1);

    let rte = r#"{"premise": "No weapons were found.", "hypothesis": "Weapons were found.", "label": "not_entailment", "idx": 0}"#;
    let data = load(TaskId::SuperGlueRte, rte, rte).unwrap();
    assert_eq!(
        pairs(&data.dev),
        [("No weapons were found.", Some("Weapons were found."), 1)]
    );
}

#[test]
fn superglue_wic_and_wsc_read_the_published_layout_through_the_reference_templates() {
    let wic = r#"{"word": "place", "sentence1": "Do you want to come over to my place later?", "sentence2": "A political system with no place for the less prominent groups.", "idx": 0, "label": false, "start1": 31, "start2": 27, "end1": 36, "end2": 32, "version": 1.1}
{"word": "run", "sentence1": "I run.", "sentence2": "You run.", "idx": 1, "label": true, "start1": 2, "start2": 4, "end1": 5, "end2": 7, "version": 1.1}
"#;
    let data = load(TaskId::SuperGlueWic, wic, wic).unwrap();
    assert_eq!(
        pairs(&data.train),
        [
            (
                "Do you want to come over to my place later? A political system with no place for \
                 the less prominent groups. Does place have the same meaning in both sentences?",
                None,
                0
            ),
            (
                "I run. You run. Does run have the same meaning in both sentences?",
                None,
                1
            ),
        ]
    );
    assert_eq!(data.metric, Metric::Accuracy);

    // Published: the spans under `target`; flattened copies (as `datasets` writes them) too.
    let wsc = r#"{"text": "Mark told Pete many lies about himself, which Pete included in his book. He should have been more truthful.", "target": {"span2_index": 13, "span1_index": 0, "span1_text": "Mark", "span2_text": "He"}, "idx": 0, "label": true}
{"text": "The city refused the demonstrators a permit because they feared violence.", "span1_text": "The demonstrators", "span2_text": "they", "span1_index": 2, "span2_index": 8, "idx": 1, "label": false}
"#;
    let data = load(TaskId::SuperGlueWsc, wsc, wsc).unwrap();
    assert_eq!(
        pairs(&data.dev),
        [
            (
                "He: Mark told Pete many lies about himself, which Pete included in his book. He \
                 should have been more truthful.",
                Some("Mark"),
                1
            ),
            (
                "they: The city refused the demonstrators a permit because they feared violence.",
                Some("The demonstrators"),
                0
            ),
        ]
    );
    let error = dev_error(
        TaskId::SuperGlueWsc,
        wsc,
        r#"{"text": "A b.", "target": {"span1_text": "A"}, "label": true}"#,
    );
    assert!(error.ends_with("val.jsonl:1: no `span2_text`"), "{error}");
    let error = dev_error(
        TaskId::SuperGlueWic,
        wic,
        r#"{"word": "a", "sentence1": "a", "sentence2": "a", "label": "yes"}"#,
    );
    assert!(
        error.contains("val.jsonl:1: unknown label \"yes\""),
        "{error}"
    );
}

#[test]
fn superglue_multirc_expands_every_answer_and_scores_questions_together() {
    let multirc = r#"{"idx": 0, "version": 1.1, "passage": {"text": "Sam bought apples. He ate two.", "questions": [{"question": "What did Sam buy?", "answers": [{"text": "Apples", "idx": 0, "label": 1}, {"text": "Pears", "idx": 1, "label": 0}], "idx": 0}, {"question": "How many did he eat?", "answers": [{"text": "Two", "idx": 2, "label": 1}, {"text": "2", "idx": 3, "label": 1}, {"text": "None", "idx": 4, "label": 0}], "idx": 1}]}}
{"idx": 1, "version": 1.1, "passage": {"text": "It rained.", "questions": [{"question": "Was it dry?", "answers": [{"text": "No", "idx": 5, "label": 1}], "idx": 2}]}}
"#;
    let data = load(TaskId::SuperGlueMultirc, multirc, multirc).unwrap();
    assert_eq!(data.labels, ["False", "True"]);
    assert_eq!(data.metric, Metric::F1AndExactMatch);
    assert_eq!(
        pairs(&data.dev),
        [
            (
                "Sam bought apples. He ate two.",
                Some("What did Sam buy? Apples"),
                1
            ),
            (
                "Sam bought apples. He ate two.",
                Some("What did Sam buy? Pears"),
                0
            ),
            (
                "Sam bought apples. He ate two.",
                Some("How many did he eat? Two"),
                1
            ),
            (
                "Sam bought apples. He ate two.",
                Some("How many did he eat? 2"),
                1
            ),
            (
                "Sam bought apples. He ate two.",
                Some("How many did he eat? None"),
                0
            ),
            ("It rained.", Some("Was it dry? No"), 1),
        ]
    );
    let groups: Vec<Option<u32>> = data.dev.iter().map(|e| e.group).collect();
    assert_eq!(groups, [0, 0, 1, 1, 1, 2].map(Some));
    assert_eq!(data.dev[4].id, "val.jsonl line 1 question 1 answer 2");

    // Hand-scored: question 0 right; question 1 misses its answer "2"; question 2 right.
    let predictions = [1, 0, 1, 0, 0, 1];
    let gold: Vec<usize> = data.dev.iter().map(|e| e.label).collect();
    let values = score_grouped(data.metric, &predictions, &gold, &groups).unwrap();
    // tp 3, fp 0, fn 1: F1 = 6/7; 2 of 3 questions exact.
    assert!((values.get(Measure::F1).unwrap() - 6.0 / 7.0).abs() < 1e-12);
    assert!((values.get(Measure::ExactMatch).unwrap() - 2.0 / 3.0).abs() < 1e-12);
    // The majority class (True, 4 of 6 in train) scores every question with a false answer
    // wrong: only question 2 is exact.
    let baseline = data.majority_baseline().unwrap();
    assert_eq!(baseline.guess, Guess::Label(1));
    assert!((baseline.values.get(Measure::ExactMatch).unwrap() - 1.0 / 3.0).abs() < 1e-12);

    let error = dev_error(
        TaskId::SuperGlueMultirc,
        multirc,
        r#"{"passage": {"text": "t", "questions": [{"question": "q", "answers": [{"text": "a", "label": 2}]}]}}"#,
    );
    assert!(
        error.ends_with("val.jsonl:1: question 0, answer 0: `label` must be 0 or 1"),
        "{error}"
    );
    let error = dev_error(
        TaskId::SuperGlueMultirc,
        multirc,
        r#"{"passage": {"text": "t"}}"#,
    );
    assert!(
        error.ends_with("val.jsonl:1: no `passage.questions` list"),
        "{error}"
    );
}

/// STS-B's published header (dev.tsv; train.tsv has the same columns).
const STSB: &str = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n\
    0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n\
    1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a flute.\tA man is playing a bamboo flute.\t3.800\n\
    2\tmain-captions\tMSRvid\t2012test\t0005\tnone\tnone\tA man is cutting a tomato.\tA dog runs.\t0.0\n";

#[test]
fn glue_stsb_reads_gold_numbers_and_is_scored_by_correlation() {
    let data = load(TaskId::GlueStsb, STSB, STSB).unwrap();
    assert_eq!(data.objective, Objective::Regression);
    assert_eq!(data.metric, Metric::Correlation);
    assert!(data.labels.is_empty());
    assert_eq!(data.head_outputs(), 1);
    assert_eq!(
        pairs(&data.dev)[1],
        (
            "A man is playing a flute.",
            Some("A man is playing a bamboo flute."),
            0
        )
    );
    let gold: Vec<f64> = data
        .dev
        .iter()
        .map(|e| f64::from(e.value.unwrap()))
        .collect();
    assert_eq!(gold, [5.0, 3.8f32 as f64, 0.0]);
    // Hand-scored: predictions (4, 4.5, 1) against (5, 3.8, 0). Ranks (2, 3, 1) against
    // (3, 2, 1): Σd² = 2, ρ = 1 − 6·2/(3·8) = 0.5.
    let values = score_values(data.metric, &[4.0, 4.5, 1.0], &gold).unwrap();
    assert!((values.get(Measure::Spearman).unwrap() - 0.5).abs() < 1e-12);
    let pearson = values.get(Measure::Pearson).unwrap();
    // Means 3.1667 and 2.9333: Σdxdy, Σdx², Σdy² computed by hand below.
    let (px, gy) = ([4.0, 4.5, 1.0], gold.clone());
    let (mx, my) = (9.5 / 3.0, gy.iter().sum::<f64>() / 3.0);
    let xy: f64 = px.iter().zip(&gy).map(|(x, y)| (x - mx) * (y - my)).sum();
    let xx: f64 = px.iter().map(|x| (x - mx) * (x - mx)).sum();
    let yy: f64 = gy.iter().map(|y| (y - my) * (y - my)).sum();
    assert!((pearson - xy / (xx * yy).sqrt()).abs() < 1e-12);
    assert!(pearson > 0.8 && pearson < 1.0, "{pearson}");
    // Predicting the train mean correlates with nothing.
    let baseline = data.majority_baseline().unwrap();
    assert!(matches!(baseline.guess, Guess::Value(mean) if (mean - 8.8 / 3.0).abs() < 1e-6));
    assert_eq!(baseline.values.primary(), 0.0);

    let error = dev_error(
        TaskId::GlueStsb,
        STSB,
        "sentence1\tsentence2\tscore\na\tb\tvery similar\n",
    );
    assert!(
        error.ends_with("dev.tsv:2: `very similar` is not a number"),
        "{error}"
    );
    let error = dev_error(
        TaskId::GlueStsb,
        STSB,
        "sentence1\tsentence2\tscore\na\tb\tNaN\n",
    );
    assert!(
        error.ends_with("dev.tsv:2: `NaN` is not a number"),
        "{error}"
    );
}

const COPA: &str = r#"{"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.", "choice2": "The grass was cut.", "question": "cause", "idx": 0, "label": 0}
{"premise": "The woman tolerated her friend's difficult behavior.", "choice1": "The woman knew her friend was going through a hard time.", "choice2": "The woman felt that her friend took advantage of her kindness.", "question": "cause", "idx": 1, "label": 0}
{"premise": "The women met for coffee.", "choice1": "The cafe reopened in a new location.", "choice2": "They wanted to catch up with each other.", "question": "cause", "idx": 2, "label": 1}
{"premise": "The runner wore shorts.", "choice1": "The forecast predicted high temperatures.", "choice2": "She planned to run along the beach.", "question": "effect", "idx": 3, "label": 1}
"#;

#[test]
fn superglue_copa_pairs_the_premise_with_each_choice_through_the_reference_joiner() {
    let data = load(TaskId::SuperGlueCopa, COPA, COPA).unwrap();
    assert_eq!(data.objective, Objective::MultipleChoice);
    assert_eq!(data.metric, Metric::Accuracy);
    assert_eq!(data.head_outputs(), 1);
    assert_eq!(data.labels, ["choice1", "choice2"]);
    let first = &data.dev[0];
    assert_eq!(
        first.text_a,
        "My body cast a shadow over the grass. because"
    );
    assert_eq!(first.text_b, None);
    assert_eq!(first.choices, ["The sun was rising.", "The grass was cut."]);
    assert_eq!(data.dev[3].text_a, "The runner wore shorts. so");
    let gold: Vec<usize> = data.dev.iter().map(|e| e.label).collect();
    assert_eq!(gold, [0, 0, 1, 1]);
    // Hand-scored: 3 of 4 choices right.
    let values = score(data.metric, &[0, 1, 1, 1], &gold).unwrap();
    assert_eq!(values.primary(), 0.75);
    // Ties between choice 1 and 2 in train go to choice 1: half right on dev.
    let baseline = data.majority_baseline().unwrap();
    assert_eq!(baseline.guess, Guess::Label(0));
    assert_eq!(baseline.values.primary(), 0.5);

    let error = dev_error(
        TaskId::SuperGlueCopa,
        COPA,
        r#"{"premise": "p", "choice1": "a", "choice2": "b", "question": "why", "label": 0}"#,
    );
    assert!(
        error.ends_with("val.jsonl:1: `question` is `why`, expected cause or effect"),
        "{error}"
    );
    let error = dev_error(
        TaskId::SuperGlueCopa,
        COPA,
        r#"{"premise": "p", "choice1": "a", "question": "cause", "label": 0}"#,
    );
    assert!(error.ends_with("val.jsonl:1: no `choice2`"), "{error}");
    let error = dev_error(
        TaskId::SuperGlueCopa,
        COPA,
        r#"{"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 2}"#,
    );
    assert!(error.contains("val.jsonl:1: unknown label `2`"), "{error}");
}

#[test]
fn bad_glue_rows_name_the_file_and_line() {
    let error = dev_error(TaskId::GlueSst2, SST2, "sentence\tlabel\ngood\t1\nbad\t2\n");
    assert!(
        error.ends_with("dev.tsv:3: unknown label `2` (expected 0, 1)"),
        "{error}"
    );
    let error = dev_error(
        TaskId::GlueSst2,
        SST2,
        "sentence\tlabel\ngood\t1\nno label here\n",
    );
    assert!(
        error.ends_with("dev.tsv:3: expected 2 tab-separated columns, found 1"),
        "{error}"
    );
    let error = dev_error(TaskId::GlueSst2, SST2, "sentence\tscore\n");
    assert!(
        error.ends_with("dev.tsv:1: no `label` column in the header (found: sentence, score)"),
        "{error}"
    );
    // A one-field first line may be a secret (a token file named as data): it is not echoed.
    let error = dev_error(TaskId::GlueSst2, SST2, "sentence\n");
    assert!(
        error.ends_with(
            "dev.tsv:1: no `label` column: the first line is not a header of column names"
        ),
        "{error}"
    );
    let rte = "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n";
    let error = dev_error(
        TaskId::GlueRte,
        rte,
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tcontradiction\n",
    );
    assert!(
        error.ends_with(
            "dev.tsv:2: unknown label `contradiction` (expected entailment, not_entailment)"
        ),
        "{error}"
    );
    // Only QQP forgives short rows; CoLA's fixed width is checked too.
    let error = dev_error(
        TaskId::GlueCola,
        COLA,
        "gj04\t1\tno original label column\n",
    );
    assert!(
        error.ends_with("dev.tsv:1: expected 4 tab-separated columns, found 3"),
        "{error}"
    );
    let error = dev_error(TaskId::GlueSst2, SST2, "sentence\tlabel\n");
    assert!(error.ends_with("dev.tsv: no dev examples"), "{error}");
}

#[test]
fn bad_superglue_lines_name_the_file_and_line() {
    let cb = r#"{"premise": "A", "hypothesis": "B", "label": "neutral"}"#;
    let cases = [
        (
            "{\"premise\": \"A\", \"hypothesis\": \"B\"}",
            "val.jsonl:1: no `label`",
        ),
        (
            "{\"premise\": \"A\", \"hypothesis\": 3, \"label\": \"neutral\"}",
            "val.jsonl:1: `hypothesis` is 3, not a string",
        ),
        (
            "{\"premise\": \"A\", \"hypothesis\": \"B\", \"label\": \"maybe\"}",
            "val.jsonl:1: unknown label `maybe` (expected entailment, contradiction, neutral)",
        ),
        ("[1, 2]", "val.jsonl:1: expected a JSON object"),
    ];
    for (dev, expected) in cases {
        let error = dev_error(TaskId::SuperGlueCb, cb, dev);
        assert!(error.ends_with(expected), "{error}");
    }
    let error = dev_error(TaskId::SuperGlueCb, cb, &format!("{cb}\n{{\"premise\": "));
    assert!(error.contains("val.jsonl:2: not JSON: "), "{error}");
    let boolq = r#"{"question": "q", "passage": "p", "label": true}"#;
    let error = dev_error(
        TaskId::SuperGlueBoolq,
        boolq,
        r#"{"question": "q", "passage": "p", "label": "yes"}"#,
    );
    assert!(
        error.ends_with("val.jsonl:1: unknown label \"yes\" (expected true or false)"),
        "{error}"
    );
}

#[test]
fn files_of_the_wrong_kind_are_rejected() {
    let error = load_task(
        TaskId::GlueSst2.spec(),
        &TaskFiles::Assets(vec![PathBuf::from("x")]),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("glue-sst2 reads the user's train and dev files"),
        "{error}"
    );
    let error = load_task(
        TaskId::MultircNi.spec(),
        &TaskFiles::Assets(vec![PathBuf::from("x")]),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("multirc-ni needs 2 file(s), got 1"),
        "{error}"
    );
    let error = load_task(
        TaskId::Sst2Rt.spec(),
        &user_files(Path::new("a"), Path::new("b")),
    )
    .unwrap_err();
    assert!(error.to_string().contains("not user files"), "{error}");
    let error = load_task(
        TaskId::Sst2Rt.spec(),
        &TaskFiles::Assets(vec![PathBuf::from("/nonexistent/snippets.txt")]),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot read /nonexistent/snippets.txt"),
        "{error}"
    );
}

/// A BIG-bench task file in its own task folder, as the assets crate lays them out.
fn bigbench_file(dir: &TempDir, task: &str, examples: &[serde_json::Value]) -> PathBuf {
    let folder = dir.path().join(task);
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("task.json");
    let json = serde_json::json!({ "name": task, "examples": examples });
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    path
}

fn epistemic_example(i: usize) -> serde_json::Value {
    let entailed = i.is_multiple_of(3);
    serde_json::json!({
        "input": format!("Premise: Ann knows that dog {i} runs. Hypothesis: Dog {i} runs."),
        "target_scores": { "entailment": u8::from(entailed), "non-entailment": u8::from(!entailed) },
    })
}

#[test]
fn bigbench_examples_split_by_hash_whatever_the_file_order() {
    let dir = TempDir::new().unwrap();
    let mut examples: Vec<serde_json::Value> = (0..300).map(epistemic_example).collect();
    let forward = bigbench_file(&dir, "forward", &examples);
    examples.reverse();
    let backward = bigbench_file(&dir, "backward", &examples);
    let spec = TaskId::RteEpistemic.spec();
    let load = |path: PathBuf| load_task(spec, &TaskFiles::Assets(vec![path])).unwrap();
    let (forward, backward) = (load(forward), load(backward));

    let texts = |examples: &[Example]| {
        let mut texts: Vec<(String, Option<String>, usize)> = examples
            .iter()
            .map(|e| (e.text_a.clone(), e.text_b.clone(), e.label))
            .collect();
        texts.sort();
        texts
    };
    assert_eq!(texts(&forward.train), texts(&backward.train));
    assert_eq!(texts(&forward.dev), texts(&backward.dev));
    assert!(
        (15..=50).contains(&forward.dev.len()),
        "{}",
        forward.dev.len()
    );
    assert_eq!(forward.train.len() + forward.dev.len(), 300);
    let first = forward
        .train
        .iter()
        .chain(&forward.dev)
        .find(|e| e.id == "forward example 0")
        .unwrap();
    assert_eq!(
        (first.text_a.as_str(), first.text_b.as_deref(), first.label),
        ("Ann knows that dog 0 runs.", Some("Dog 0 runs."), 0)
    );
}

#[test]
fn bad_bigbench_examples_name_the_file_and_example() {
    let dir = TempDir::new().unwrap();
    let mut examples: Vec<serde_json::Value> = (0..30).map(epistemic_example).collect();
    examples[17] = serde_json::json!({
        "input": "Premise: no hypothesis here.",
        "target_scores": { "entailment": 1, "non-entailment": 0 },
    });
    let path = bigbench_file(&dir, "epistemic_reasoning", &examples);
    let error = load_task(
        TaskId::RteEpistemic.spec(),
        &TaskFiles::Assets(vec![path.clone()]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with(&format!(
            "{}: example 17: input does not read",
            path.display()
        )),
        "{error}"
    );

    examples[17] = serde_json::json!({ "target_scores": { "entailment": 1 } });
    let path = bigbench_file(&dir, "epistemic_reasoning", &examples);
    let error = load_task(TaskId::RteEpistemic.spec(), &TaskFiles::Assets(vec![path]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("task.json: example 17: missing field `input`"),
        "{error}"
    );

    let path = write(&dir, "broken.json", "{\"examples\": [\n  {\"input\": }\n]}");
    let error = load_task(TaskId::RteEpistemic.spec(), &TaskFiles::Assets(vec![path]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("broken.json:2: not a BIG-bench task file"),
        "{error}"
    );
}

#[test]
fn multirc_candidates_become_answer_correctness_and_poor_distractors_are_counted() {
    const PARAGRAPHS: usize = 60;
    let dir = TempDir::new().unwrap();
    let candidate = |paragraph: usize, role: &str, answer: &str, target: &str| {
        serde_json::json!({
            "input": format!("Paragraph- Sent 1: Story {paragraph}. \nQuestion: Who? \n{role} Answer: {answer}"),
            "target": [target],
        })
    };
    let offered_correct: Vec<serde_json::Value> = (0..PARAGRAPHS)
        .flat_map(|p| {
            [
                candidate(p, "Correct", "Ann.", "Yes."),
                candidate(p, "Correct", "Bob.", "No."),
            ]
        })
        .collect();
    let offered_wrong: Vec<serde_json::Value> = (0..PARAGRAPHS)
        .flat_map(|p| {
            [
                candidate(p, "Incorrect", "Cid.", "Yes."),
                candidate(p, "Incorrect", "Ann.", "No."),
            ]
        })
        .collect();
    let files = TaskFiles::Assets(vec![
        bigbench_file(
            &dir,
            "subtask056_multirc_classify_correct_answer",
            &offered_correct,
        ),
        bigbench_file(
            &dir,
            "subtask057_multirc_classify_incorrect_answer",
            &offered_wrong,
        ),
    ]);
    let data = load_task(TaskId::MultircNi.spec(), &files).unwrap();
    let all: Vec<&Example> = data.train.iter().chain(&data.dev).collect();
    assert_eq!(all.len(), 3 * PARAGRAPHS);
    let label_of = |answer: &str| -> Vec<usize> {
        let mut labels: Vec<usize> = all
            .iter()
            .filter(|e| e.text_b.as_deref() == Some(&format!("Who? {answer}") as &str))
            .map(|e| e.label)
            .collect();
        labels.dedup();
        labels
    };
    assert_eq!(label_of("Ann."), [1]);
    assert_eq!(label_of("Bob."), [0]);
    assert_eq!(label_of("Cid."), [0]);
    assert_eq!(all[0].text_a, "Sent 1: Story 0.");
    assert_eq!(data.metric, Metric::F1);
    assert_eq!(data.skipped.total(), PARAGRAPHS);
    assert_eq!(data.skipped.groups[0].at[0], Location::Example(1));
    assert!(
        data.skipped.groups[0]
            .path
            .ends_with("subtask057_multirc_classify_incorrect_answer/task.json")
    );
    // A paragraph's candidates all fall on one side of the split.
    for example in &data.dev {
        assert!(
            !data.train.iter().any(|t| t.text_a == example.text_a),
            "{}",
            example.text_a
        );
    }
}

/// One ReCoRD passage in the published layout (character offsets, `end` inclusive; the "é"
/// makes them differ from byte offsets), and one whose passage marks no entity.
const RECORD: &str = r#"{"source": "Daily mail", "passage": {"text": "Café owner Barack Obama met Michelle Obama in Paris.\n@highlight\nObama visits Paris", "entities": [{"start": 11, "end": 22}, {"start": 28, "end": 41}, {"start": 46, "end": 50}, {"start": 64, "end": 68}, {"start": 77, "end": 81}]}, "qas": [{"query": "@placeholder was born in Hawaii", "answers": [{"start": 11, "end": 22, "text": "Barack Obama"}], "idx": 0}, {"query": "They met in @placeholder", "answers": [{"start": 46, "end": 50, "text": "Paris"}], "idx": 1}], "idx": 0}
{"source": "CNN", "passage": {"text": "Nothing is named here.", "entities": []}, "qas": [{"query": "@placeholder is missing", "answers": [{"start": 0, "end": 6, "text": "Nothing"}], "idx": 2}], "idx": 1}
"#;

#[test]
fn superglue_record_ranks_every_entity_per_query_and_scores_squad_f1_and_exact_match() {
    let data = load(TaskId::SuperGlueRecord, RECORD, RECORD).unwrap();
    assert_eq!(data.objective, Objective::Classification);
    assert_eq!(data.metric, Metric::Record);
    // Distinct entities, sorted: each is one candidate of both queries.
    let candidates: Vec<&str> = data.dev[..4]
        .iter()
        .map(|e| e.text_b.as_deref().unwrap())
        .collect();
    assert_eq!(
        candidates,
        [
            "Barack Obama was born in Hawaii",
            "Michelle Obama was born in Hawaii",
            "Obama was born in Hawaii",
            "Paris was born in Hawaii",
        ]
    );
    assert_eq!(data.dev.len(), 8);
    assert_eq!(
        data.dev[0].text_a,
        "Café owner Barack Obama met Michelle Obama in Paris.\n- Obama visits Paris"
    );
    assert_eq!(data.dev[7].text_b.as_deref(), Some("They met in Paris"));
    let labels: Vec<usize> = data.dev.iter().map(|e| e.label).collect();
    assert_eq!(labels, [1, 0, 0, 0, 0, 0, 0, 1]);
    let groups: Vec<Option<u32>> = data.dev.iter().map(|e| e.group).collect();
    assert_eq!(
        groups,
        [Some(0); 4]
            .into_iter()
            .chain([Some(1); 4])
            .collect::<Vec<_>>()
    );
    // Credits against "Barack Obama": "Michelle Obama" shares 1 of 2 tokens each way (F1 ½);
    // "Obama" has precision 1 and recall ½ (F1 ⅔).
    let f1: Vec<f64> = data.dev[..4].iter().map(|e| e.credit.unwrap().f1).collect();
    assert_eq!(f1[0], 1.0);
    assert!((f1[1] - 0.5).abs() < 1e-12 && (f1[2] - 2.0 / 3.0).abs() < 1e-12 && f1[3] == 0.0);
    // The second passage marks no entity: its query is skipped and counted.
    assert_eq!(data.skipped.total(), 2, "{}", data.skipped);
    assert_eq!(data.skipped.groups[0].at, [Location::Line(2)]);

    // Hand-scored: query 0 ranks "Obama" first (F1 ⅔, not exact), query 1 "Paris" (exact).
    let scores = [0.1, 0.2, 0.9, 0.0, 0.0, 0.0, 0.0, 0.3];
    let credits: Vec<Credit> = data.dev.iter().map(|e| e.credit.unwrap()).collect();
    let values = score_ranked(data.metric, &scores, &groups, &credits).unwrap();
    assert!((values.get(Measure::AnswerF1).unwrap() - 5.0 / 6.0).abs() < 1e-12);
    assert_eq!(values.get(Measure::AnswerExactMatch), Some(0.5));
    let keys: Vec<&str> = values.values().iter().map(|(m, _)| m.key()).collect();
    assert_eq!(keys, ["f1", "exact_match"]);
    // A constant model picks each query's first candidate: right for query 0 only.
    let baseline = data.majority_baseline().unwrap();
    assert_eq!(baseline.guess, Guess::FirstCandidate);
    assert_eq!(baseline.values.primary(), 0.5);

    let error = dev_error(
        TaskId::SuperGlueRecord,
        RECORD,
        r#"{"passage": {"text": "abc", "entities": [{"start": 1, "end": 3}]}, "qas": []}"#,
    );
    assert!(
        error.contains("val.jsonl:1: entity 0: `start` and `end` must be offsets into the passage's 3 characters"),
        "{error}"
    );
    let error = dev_error(
        TaskId::SuperGlueRecord,
        RECORD,
        r#"{"passage": {"text": "abc", "entities": [{"start": 0, "end": 0}]}, "qas": [{"query": "@placeholder", "answers": []}]}"#,
    );
    assert!(
        error.contains("val.jsonl:1: query 0: no gold answers"),
        "{error}"
    );
}
