//! The pipeline on the tiny model and the bundled sst2-rt data: the reporter's hook comes
//! before the first step (and can stop the run), snapshots go through the store, and a run
//! resumed from one ends as an uninterrupted run does.

use std::path::Path;

use lightpeft_api::{Hyperparams, Preset};
use lightpeft_engine::train::{CancelToken, EvalRecord, Observer, StepRecord, TrainState};
use lightpeft_pipeline::store::{ESTIMATION, STAGE1};
use lightpeft_pipeline::{
    DataSource, DeviceChoice, Error, JobSpec, Prepared, Reporter, RunFolder, Work, run,
};

fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let real = lightpeft_assets::vader_movie_file(&lightpeft_assets::default_data_dir());
    assert!(real.is_file(), "run `lightpeft assets fetch` first");
    let dest = lightpeft_assets::vader_movie_file(dir.path());
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(&real, &dest).unwrap();
    let spec = lightpeft_engine::tiny::TinySpec::demo(lightpeft_engine::Architecture::Bert);
    let model = lightpeft_assets::model_dir(dir.path(), "tiny-bert");
    lightpeft_engine::tiny::write_tiny_model(&model, &spec, 7).unwrap();
    dir
}

fn estimation(data: &Path, resume: Option<usize>) -> JobSpec {
    JobSpec {
        work: Work::Estimation,
        model: "tiny-bert".into(),
        source: DataSource {
            task: "sst2-rt".into(),
            train_file: None,
            dev_file: None,
        },
        params: Hyperparams {
            estimation_steps: 6,
            max_train_examples: 64,
            max_dev_examples: 32,
            max_len: 32,
            batch_size: 16,
            ..Preset::QuickDemo.params()
        },
        device: DeviceChoice::Cpu,
        resume,
        data_dir: data.to_path_buf(),
        memory_budget: None,
    }
}

/// Records what it is told; snapshots every `every` steps; cancels after `stop_after` steps;
/// refuses to start when `refuse`.
#[derive(Default)]
struct Seen {
    prepared: Vec<(usize, &'static str, usize, Option<usize>)>,
    steps: Vec<usize>,
    evals: usize,
    snapshots: Vec<usize>,
    every: Option<usize>,
    stop_after: Option<(usize, CancelToken)>,
    refuse: bool,
}

impl Observer for Seen {
    fn on_step(&mut self, record: &StepRecord) {
        self.steps.push(record.step);
        if let Some((n, token)) = &self.stop_after
            && record.step + 1 == *n
        {
            token.cancel();
        }
    }

    fn on_eval(&mut self, _record: &EvalRecord) {
        self.evals += 1;
    }

    fn checkpoint_every(&self) -> Option<usize> {
        self.every
    }

    fn on_checkpoint(&mut self, state: &TrainState) {
        self.snapshots.push(state.next_step);
    }
}

impl Reporter for Seen {
    fn on_prepared(&mut self, p: &Prepared) -> lightpeft_pipeline::Result<()> {
        assert!(
            self.steps.is_empty(),
            "the hook comes before the first step"
        );
        let modules = p.modules.as_ref().map_or(0, Vec::len);
        self.prepared
            .push((p.total_steps, p.metric, modules, p.resume_from));
        if self.refuse {
            return Err(Error::Caller("the store is read-only".into()));
        }
        Ok(())
    }
}

#[test]
fn a_refusing_hook_stops_the_run_before_it_trains_or_writes() {
    let data = data_dir();
    let folder = data.path().join("run");
    let mut seen = Seen {
        refuse: true,
        ..Seen::default()
    };
    let err = run(
        estimation(data.path(), None),
        &RunFolder::new(&folder),
        &mut seen,
        &CancelToken::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(seen.steps.is_empty());
    // The tiny model: 2 layers × 6 LoRA targets.
    assert_eq!(seen.prepared, vec![(6, "accuracy", 12, None)]);
    assert!(!folder.exists());
}

#[test]
fn snapshots_go_through_the_store_and_a_resumed_run_ends_like_a_whole_one() {
    let data = data_dir();
    let whole_dir = data.path().join("whole");
    let mut whole = Seen::default();
    let expected = run(
        estimation(data.path(), None),
        &RunFolder::new(&whole_dir),
        &mut whole,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(whole.steps, (0..6).collect::<Vec<_>>());
    assert!(whole_dir.join(STAGE1).join("model.safetensors").is_file());
    assert!(whole_dir.join(ESTIMATION).is_file());

    let cut_dir = data.path().join("cut");
    let cancel = CancelToken::new();
    let mut first = Seen {
        every: Some(2),
        stop_after: Some((3, cancel.clone())),
        ..Seen::default()
    };
    let stopped = run(
        estimation(data.path(), None),
        &RunFolder::new(&cut_dir),
        &mut first,
        &cancel,
    )
    .unwrap();
    assert!(stopped.cancelled);
    assert_eq!(stopped.steps, 3);
    // Every 2 steps, and one at the cancel; each stored before the reporter heard of it.
    assert_eq!(first.snapshots, vec![2, 3]);
    for n in &first.snapshots {
        assert!(cut_dir.join(format!("checkpoints/{n}")).is_dir(), "{n}");
    }
    assert!(
        !cut_dir.join(STAGE1).exists(),
        "a cancelled run exports nothing"
    );

    let mut rest = Seen::default();
    let resumed = run(
        estimation(data.path(), Some(3)),
        &RunFolder::new(&cut_dir),
        &mut rest,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(rest.prepared[0].3, Some(3));
    assert_eq!(rest.steps, vec![3, 4, 5]);
    assert_eq!(resumed.steps, expected.steps);
    assert_eq!(
        resumed.evals.iter().map(|e| e.step).collect::<Vec<_>>(),
        expected.evals.iter().map(|e| e.step).collect::<Vec<_>>()
    );
    let (a, b) = (
        &resumed.evals.last().unwrap(),
        &expected.evals.last().unwrap(),
    );
    for ((ka, va), (kb, vb)) in a.metrics.iter().zip(&b.metrics) {
        assert_eq!(ka, kb);
        assert!((va - vb).abs() < 1e-9, "{ka}: {va} vs {vb}");
    }
    assert!(cut_dir.join(STAGE1).join("model.safetensors").is_file());

    let err = run(
        estimation(data.path(), Some(5)),
        &RunFolder::new(&cut_dir),
        &mut Seen::default(),
        &CancelToken::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("checkpoints/5"), "{err}");
}
