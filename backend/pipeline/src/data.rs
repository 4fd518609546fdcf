//! Where a run's examples and model come from: a task's bundled or user files, cut to the
//! parameters' limits and tokenised with the model's tokenizer.

use std::path::{Path, PathBuf};

use lightpeft_api::Hyperparams;
use lightpeft_engine::TextEncoder;
use lightpeft_engine::data::{
    AssetFile, Dataset, Example, TaskFiles, TaskId, TaskInputs, TaskSpec, load_task,
};
use lightpeft_engine::train::TokenizedSplit;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a run's data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSource {
    /// Task name, e.g. `sst2-rt`, or `dataset:NAME` for a saved dataset.
    pub task: String,
    /// The user's train file, for GLUE/SuperGLUE tasks.
    pub train_file: Option<PathBuf>,
    /// The user's dev file, for GLUE/SuperGLUE tasks.
    pub dev_file: Option<PathBuf>,
}

/// Reads a task's examples from the bundled assets, the user's files, or a saved dataset
/// (`dataset:NAME`, see [`crate::datasets`]).
pub fn load_dataset(source: &DataSource, data_dir: &Path) -> Result<Dataset> {
    if let Some(name) = crate::datasets::dataset_name(&source.task) {
        if source.train_file.is_some() || source.dev_file.is_some() {
            return Err(Error::Usage(format!(
                "dataset `{name}` holds its own files; drop --train-file/--dev-file"
            )));
        }
        return crate::datasets::load(data_dir, name);
    }
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
/// because data files are often sorted by label. Examples that answer one question (MultiRC's
/// answers, ReCoRD's candidates) are kept or dropped together, at an even stride over the
/// questions, so every kept question is scored whole.
pub fn subsample(examples: &[Example], max: usize) -> Vec<Example> {
    if max == 0 || examples.len() <= max {
        return examples.to_vec();
    }
    if examples.iter().all(|e| e.group.is_none()) {
        return (0..max)
            .map(|i| examples[i * examples.len() / max].clone())
            .collect();
    }
    // Loaders number a question's examples consecutively; each run of one group is a question.
    let questions: Vec<&[Example]> = examples.chunk_by(|a, b| a.group == b.group).collect();
    let mut kept = Vec::with_capacity(max);
    let mut taken = 0;
    // As many questions as fit at the average size, then at the stride while they still fit.
    let wanted = (max * questions.len() / examples.len()).max(1);
    for i in 0..wanted {
        let question = questions[i * questions.len() / wanted];
        if taken + question.len() > max && taken > 0 {
            break;
        }
        taken += question.len();
        kept.extend_from_slice(question);
    }
    kept
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
        TokenizedSplit::from_examples(&tok, examples, dataset.objective)
    };
    Ok(Splits {
        train: split(&dataset.train)?,
        dev: split(&dataset.dev)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(id: usize, group: Option<u32>) -> Example {
        Example {
            group,
            ..Example::labelled(id.to_string(), String::new(), None, 0)
        }
    }

    #[test]
    fn subsampling_takes_an_even_stride_and_keeps_questions_whole() {
        let plain: Vec<Example> = (0..10).map(|i| example(i, None)).collect();
        let ids = |kept: &[Example]| kept.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&subsample(&plain, 5)), ["0", "2", "4", "6", "8"]);
        assert_eq!(subsample(&plain, 0).len(), 10);
        // Six questions of two answers each: 6 examples keep 3 whole questions, 0, 2 and 4.
        let grouped: Vec<Example> = (0..12).map(|i| example(i, Some(i as u32 / 2))).collect();
        let kept = subsample(&grouped, 6);
        assert_eq!(ids(&kept), ["0", "1", "4", "5", "8", "9"]);
        // A limit below one question still keeps one whole question.
        assert_eq!(ids(&subsample(&grouped, 1)), ["0", "1"]);
    }
}
