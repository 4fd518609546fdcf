//! The bundled tasks on the real files fetched by `lightpeft assets fetch`: the VADER movie
//! snippets always, the BIG-bench tasks only with `--ignored` (an optional 358 MB download).

use std::path::PathBuf;

use lightpeft_engine::data::{
    AssetFile, Dataset, Guess, Measure, TaskFiles, TaskId, TaskInputs, label_counts, load_task,
};

/// The real file behind an asset, failing with the command that fetches it.
fn asset_path(asset: AssetFile) -> PathBuf {
    let data_dir = lightpeft_assets::default_data_dir();
    let (path, fetch) = match asset {
        AssetFile::Vader(name) => (lightpeft_assets::vader_file(&data_dir, name), "vader"),
        AssetFile::BigBench(task) => (
            lightpeft_assets::bigbench_task_file(&data_dir, task),
            "bigbench",
        ),
    };
    assert!(
        path.is_file(),
        "{} is missing: run `cargo run --release -p lightpeft -- assets fetch {fetch}` \
         (or point LIGHTPEFT_DATA_DIR at a data directory that has it)",
        path.display()
    );
    path
}

fn load(task: TaskId) -> Dataset {
    let TaskInputs::Assets(assets) = task.spec().inputs else {
        panic!("{task} reads user files");
    };
    let paths = assets.iter().map(|&asset| asset_path(asset)).collect();
    load_task(task.spec(), &TaskFiles::Assets(paths)).unwrap()
}

/// (train size, dev size, train label counts, dev label counts, skipped rows).
fn sizes(data: &Dataset) -> (usize, usize, Vec<usize>, Vec<usize>, usize) {
    let k = data.labels.len();
    (
        data.train.len(),
        data.dev.len(),
        label_counts(&data.train, k),
        label_counts(&data.dev, k),
        data.skipped.total(),
    )
}

#[test]
fn sst2_rt_gives_the_documented_split_of_the_vader_movie_snippets() {
    let data = load(TaskId::Sst2Rt);
    // assets.md §2.1: 10,605 rows, 1,432 with |rating| < 1; id % 10 == 0 → 929 dev (470
    // positive), 8,244 train.
    assert_eq!(
        sizes(&data),
        (8_244, 929, vec![4_116, 4_128], vec![459, 470], 1_432)
    );
    assert!(
        data.dev
            .iter()
            .all(|e| e.id.parse::<u64>().unwrap() % 10 == 0)
    );
    let first = &data.train[0];
    assert_eq!(first.id, "1");
    assert!(
        first
            .text_a
            .starts_with("The Rock is destined to be the 21st Century's new ''Conan''"),
        "{}",
        first.text_a
    );
    assert_eq!(first.label, 1);
    assert!(data.train.iter().all(|e| !e.text_a.ends_with('\r')));

    let baseline = data.majority_baseline().unwrap();
    assert_eq!(baseline.guess, Guess::Label(1));
    let accuracy = baseline.values.get(Measure::Accuracy).unwrap();
    assert!((accuracy - 470.0 / 929.0).abs() < 1e-12, "{accuracy}");
}

#[test]
fn the_other_vader_files_are_tasks_split_by_document() {
    // (task, train, dev, negative and positive over both, skipped as too neutral), counted
    // from the files with a separate script: |rating| ≥ 1, dev when the document number
    // (before `_`, or the whole id) is divisible by 10.
    let cases = [
        (TaskId::SentimentTweets, 2_419, 248, [837, 1_830], 1_533),
        (TaskId::SentimentAmazon, 2_231, 224, [941, 1_514], 1_253),
        (TaskId::SentimentNyt, 1_409, 145, [996, 558], 3_636),
    ];
    for (task, train, dev, totals, skipped) in cases {
        let data = load(task);
        let (n_train, n_dev, train_counts, dev_counts, n_skipped) = sizes(&data);
        assert_eq!((n_train, n_dev, n_skipped), (train, dev, skipped), "{task}");
        let both: Vec<usize> = train_counts
            .iter()
            .zip(&dev_counts)
            .map(|(a, b)| a + b)
            .collect();
        assert_eq!(both, totals, "{task}");
        for example in &data.dev {
            let document = example.id.split('_').next().unwrap();
            assert_eq!(
                document.parse::<u64>().unwrap() % 10,
                0,
                "{task}: {}",
                example.id
            );
        }
        // No document has sentences on both sides.
        let documents = |examples: &[lightpeft_engine::data::Example]| {
            examples
                .iter()
                .map(|e| e.id.split('_').next().unwrap().to_string())
                .collect::<std::collections::HashSet<_>>()
        };
        assert!(
            documents(&data.train).is_disjoint(&documents(&data.dev)),
            "{task}"
        );
        assert!(
            data.train.iter().all(|e| !e.text_a.ends_with('\r')),
            "{task}"
        );
    }
}

#[test]
#[ignore = "needs the optional BIG-bench download: lightpeft assets fetch bigbench"]
fn bigbench_tasks_load_whole_with_a_tenth_in_dev() {
    // (task, examples in the file, examples dropped by design).
    let cases = [
        (TaskId::RteEpistemic, 2_000, 0),
        (TaskId::CbPresupp, 735, 0),
        (TaskId::BoolqStrategyqa, 2_290, 0),
        (TaskId::NliVitaminc, 54_668, 0),
        // 057's 1,015 "No." judgements carry no correctness label.
        (TaskId::MultircNi, 1_818 + 2_915, 1_015),
    ];
    for (task, total, skipped) in cases {
        let data = load(task);
        let (train, dev, train_counts, dev_counts, dropped) = sizes(&data);
        println!(
            "{task}: train {train} {train_counts:?}, dev {dev} {dev_counts:?}, skipped {dropped}"
        );
        assert_eq!(train + dev + dropped, total, "{task}");
        assert_eq!(dropped, skipped, "{task}");
        let share = dev as f64 / (train + dev) as f64;
        assert!((0.07..0.13).contains(&share), "{task}: dev share {share}");
        assert!(dev_counts.iter().all(|&n| n > 0), "{task}: {dev_counts:?}");
    }
}

#[test]
#[ignore = "needs the optional BIG-bench download: lightpeft assets fetch bigbench"]
fn bigbench_label_totals_match_assets_md() {
    let totals = |task| {
        let data = load(task);
        let k = data.labels.len();
        let (train, dev) = (label_counts(&data.train, k), label_counts(&data.dev, k));
        let named: Vec<(String, usize)> = data
            .labels
            .iter()
            .zip(train.iter().zip(&dev))
            .map(|(name, (t, d))| (name.clone(), t + d))
            .collect();
        named
    };
    let named = |pairs: &[(&str, usize)]| -> Vec<(String, usize)> {
        pairs.iter().map(|&(n, c)| (n.to_string(), c)).collect()
    };
    assert_eq!(
        totals(TaskId::RteEpistemic),
        named(&[("entailment", 741), ("non-entailment", 1_259)])
    );
    assert_eq!(
        totals(TaskId::CbPresupp),
        named(&[
            ("entailment", 301),
            ("contradiction", 127),
            ("neutral", 307)
        ])
    );
    assert_eq!(
        totals(TaskId::BoolqStrategyqa),
        named(&[("No", 1_219), ("Yes", 1_071)])
    );
    assert_eq!(
        totals(TaskId::NliVitaminc),
        named(&[("True", 27_242), ("False", 20_169), ("Neither", 7_257)])
    );
    // 056: 1,320 "Yes." (correct), 498 "No."; 057: 1,900 "Yes." (a wrong answer).
    assert_eq!(
        totals(TaskId::MultircNi),
        named(&[("False", 498 + 1_900), ("True", 1_320)])
    );
}
