//! Where a run's examples and model come from: a task's bundled or user files, cut to the
//! parameters' limits and tokenised with the model's tokenizer.

use std::path::{Path, PathBuf};

use lightpeft_api::Hyperparams;
use lightpeft_engine::TextEncoder;
use lightpeft_engine::data::{
    AssetFile, Dataset, TaskFiles, TaskId, TaskInputs, TaskSpec, load_task,
};
use lightpeft_engine::train::TokenizedSplit;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a run's data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSource {
    /// Task name, e.g. `sst2-rt`.
    pub task: String,
    /// The user's train file, for GLUE/SuperGLUE tasks.
    pub train_file: Option<PathBuf>,
    /// The user's dev file, for GLUE/SuperGLUE tasks.
    pub dev_file: Option<PathBuf>,
}

/// Reads a task's examples from the bundled assets or the user's files.
pub fn load_dataset(source: &DataSource, data_dir: &Path) -> Result<Dataset> {
    let id: TaskId = source.task.parse()?;
    let spec = id.spec();
    let files = match (spec.inputs, &source.train_file, &source.dev_file) {
        (TaskInputs::Assets(_), None, None) => {
            TaskFiles::Assets(bundled_files(spec, data_dir).unwrap_or_default())
        }
        (TaskInputs::Assets(_), _, _) => {
            return Err(Error::Usage(format!(
                "task {} reads the bundled data; drop --train-file/--dev-file",
                spec.name
            )));
        }
        (TaskInputs::UserFiles { .. }, Some(t), Some(d)) => TaskFiles::TrainDev {
            train: t.clone(),
            dev: d.clone(),
        },
        (TaskInputs::UserFiles { train, dev }, _, _) => {
            return Err(Error::Usage(format!(
                "task {} needs your files: --train-file (e.g. {train}) and --dev-file (e.g. {dev})",
                spec.name
            )));
        }
    };
    if let TaskFiles::Assets(paths) = &files
        && let Some(missing) = paths.iter().find(|p| !p.is_file())
    {
        return Err(Error::file(
            missing,
            "missing: run `lightpeft assets fetch` (add `bigbench` for BIG-bench tasks)",
        ));
    }
    Ok(load_task(spec, &files)?)
}

/// The bundled files a task reads, or `None` for a task that reads the user's files.
pub fn bundled_files(spec: &TaskSpec, data_dir: &Path) -> Option<Vec<PathBuf>> {
    match spec.inputs {
        TaskInputs::Assets(assets) => Some(
            assets
                .iter()
                .map(|a| match a {
                    AssetFile::Vader(name) => lightpeft_assets::vader_file(data_dir, name),
                    AssetFile::BigBench(task) => {
                        lightpeft_assets::bigbench_task_file(data_dir, task)
                    }
                })
                .collect(),
        ),
        TaskInputs::UserFiles { .. } => None,
    }
}

/// Keeps at most `max` examples at an even stride (0 keeps all). A stride, not a prefix,
/// because data files are often sorted by label.
pub fn subsample<T: Clone>(examples: &[T], max: usize) -> Vec<T> {
    if max == 0 || examples.len() <= max {
        return examples.to_vec();
    }
    (0..max)
        .map(|i| examples[i * examples.len() / max].clone())
        .collect()
}

/// A model name under `<data>/models`, or a folder path.
pub fn resolve_model(model: &str, data_dir: &Path) -> Result<PathBuf> {
    let named = lightpeft_assets::model_dir(data_dir, model);
    if lightpeft_assets::validate_model_name(model).is_ok() && named.is_dir() {
        return Ok(named);
    }
    let path = PathBuf::from(model);
    if path.is_dir() {
        return Ok(path);
    }
    Err(Error::file(
        path,
        format!(
            "no such model: neither a folder nor a model under {} (run `lightpeft assets fetch`)",
            data_dir.join("models").display()
        ),
    ))
}

/// A dataset tokenised for a model.
pub struct Splits {
    /// Training split.
    pub train: TokenizedSplit,
    /// Dev split.
    pub dev: TokenizedSplit,
}

/// The dataset cut to the parameters' example limits, so training, evaluation and the
/// majority baseline all see the same examples.
pub fn limit_examples(mut dataset: Dataset, params: &Hyperparams) -> Dataset {
    dataset.train = subsample(&dataset.train, params.max_train_examples);
    dataset.dev = subsample(&dataset.dev, params.max_dev_examples);
    dataset
}

/// Tokenises both splits with the model folder's tokenizer.
pub fn tokenize(dataset: &Dataset, model_dir: &Path, params: &Hyperparams) -> Result<Splits> {
    let tok = TextEncoder::from_file(&model_dir.join("tokenizer.json"), params.max_len)?;
    let split = |examples: &[lightpeft_engine::data::Example]| {
        let split = TokenizedSplit::new(
            &tok,
            examples
                .iter()
                .map(|e| (e.text_a.as_str(), e.text_b.as_deref(), e.label)),
        )?;
        // Questions, where answers are scored per question (MultiRC's exact match).
        if examples.iter().any(|e| e.group.is_some()) {
            return split.with_groups(examples.iter().map(|e| e.group).collect());
        }
        Ok::<_, lightpeft_engine::Error>(split)
    };
    Ok(Splits {
        train: split(&dataset.train)?,
        dev: split(&dataset.dev)?,
    })
}
