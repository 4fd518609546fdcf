//! Named datasets: the user's own train and dev files (CSV, TSV or JSON lines), checked, copied
//! into `<data>/user-datasets/NAME/` and described by `dataset.json` (the column mapping, the
//! labels, counts and each file's sha256). A run names one as the task `dataset:NAME`.
//!
//! A dataset is written whole or not at all (a hidden folder renamed into place), and its
//! files are checked against their recorded sha256 before every load, so a run never trains
//! on a file that changed after it was saved.

use std::path::{Path, PathBuf};

use lightpeft_api::rest::{DatasetColumns, DatasetFile, DatasetLabels, SavedDataset};
use lightpeft_engine::data::{
    ColumnMapping, CustomLayout, Dataset, Example, LabelKind, TableFormat, label_counts,
    load_custom,
};

use crate::error::{Error, Result};

/// The task-name prefix that names a dataset: `dataset:NAME`.
pub const TASK_PREFIX: &str = "dataset:";

/// The description file in a dataset's folder.
pub const MANIFEST: &str = "dataset.json";

/// The engine's reading of a dataset's mapping.
pub fn custom_layout(saved: &SavedDataset) -> CustomLayout {
    layout_of(&saved.columns, saved.label_kind, saved.header)
}

/// The engine's reading of a column mapping.
pub fn layout_of(columns: &DatasetColumns, labels: DatasetLabels, header: bool) -> CustomLayout {
    CustomLayout {
        columns: ColumnMapping {
            text: columns.text.clone(),
            text_pair: columns.text_pair.clone(),
            label: columns.label.clone(),
        },
        labels: match labels {
            DatasetLabels::Classes => LabelKind::Classes,
            DatasetLabels::Numbers => LabelKind::Numbers,
        },
        header,
    }
}

/// The folder of datasets under a data directory.
pub fn datasets_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("user-datasets")
}

/// A dataset's name from a task name, if it names one.
pub fn dataset_name(task: &str) -> Option<&str> {
    task.strip_prefix(TASK_PREFIX)
}

/// Refuses names that are not a plain folder name (the same rule as model names).
pub fn validate_name(name: &str) -> Result<()> {
    lightpeft_assets::validate_model_name(name)
        .map_err(|e| Error::Usage(e.to_string().replace("model name", "dataset name")))
}

/// Checks `train` and `dev` through the mapping and saves them as dataset `name`. Nothing is
/// written when a file does not read or the name is taken.
pub fn create(
    data_dir: &Path,
    name: &str,
    columns: &DatasetColumns,
    label_kind: DatasetLabels,
    header: bool,
    train: &Path,
    dev: &Path,
) -> Result<SavedDataset> {
    validate_name(name)?;
    let parent = datasets_dir(data_dir);
    let target = parent.join(name);
    if target.exists() {
        return Err(Error::Usage(format!(
            "a dataset named `{name}` exists already (delete it first or choose another name)"
        )));
    }
    let dataset = load_custom(&layout_of(columns, label_kind, header), train, dev)?;
    std::fs::create_dir_all(&parent).map_err(|e| Error::file(&parent, e))?;
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let described = SavedDataset {
        name: name.to_string(),
        columns: columns.clone(),
        label_kind,
        header,
        train: DatasetFile::default(),
        dev: DatasetFile::default(),
        labels: dataset.labels.clone(),
        skipped: dataset.skipped.total(),
    };
    let written = write_staged(&staging, described, &dataset, train, dev).and_then(|manifest| {
        std::fs::rename(&staging, &target)
            .map_err(|e| Error::file(&target, e))
            .map(|()| manifest)
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written
}

/// Copies the files into `staging` and writes the description, completed with the files'.
fn write_staged(
    staging: &Path,
    mut saved: SavedDataset,
    dataset: &Dataset,
    train: &Path,
    dev: &Path,
) -> Result<SavedDataset> {
    std::fs::create_dir(staging).map_err(|e| Error::file(staging, e))?;
    let labels = dataset.labels.len();
    let store = |source: &Path, split: &str, examples: &[Example]| {
        let extension = match TableFormat::of(source)? {
            TableFormat::Csv => "csv",
            TableFormat::Tsv => "tsv",
            TableFormat::Jsonl => "jsonl",
        };
        let file = format!("{split}.{extension}");
        let copy = staging.join(&file);
        let bytes = std::fs::copy(source, &copy).map_err(|e| Error::file(source, e))?;
        Ok::<_, Error>(DatasetFile {
            file,
            bytes,
            sha256: lightpeft_assets::sha256_file(&copy).map_err(|e| Error::file(&copy, e))?,
            examples: examples.len(),
            label_counts: if labels == 0 {
                Vec::new()
            } else {
                label_counts(examples, labels)
            },
        })
    };
    saved.train = store(train, "train", &dataset.train)?;
    saved.dev = store(dev, "dev", &dataset.dev)?;
    let path = staging.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&saved).map_err(|e| Error::file(&path, e))?;
    std::fs::write(&path, json).map_err(|e| Error::file(&path, e))?;
    Ok(saved)
}

/// A saved dataset's description.
pub fn manifest(data_dir: &Path, name: &str) -> Result<SavedDataset> {
    validate_name(name)?;
    let path = datasets_dir(data_dir).join(name).join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Usage(format!(
                "no dataset named `{name}` (see `lightpeft dataset list`)"
            ))
        } else {
            Error::file(&path, e)
        }
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::file(&path, format!("not a dataset description: {e}")))
}

/// Every saved dataset, by name.
pub fn list(data_dir: &Path) -> Result<Vec<SavedDataset>> {
    let dir = datasets_dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::file(&dir, e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join(MANIFEST).is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names.iter().map(|name| manifest(data_dir, name)).collect()
}

/// Reads a saved dataset, after checking its files are the ones saved.
pub fn load(data_dir: &Path, name: &str) -> Result<Dataset> {
    let manifest = manifest(data_dir, name)?;
    let folder = datasets_dir(data_dir).join(name);
    for stored in [&manifest.train, &manifest.dev] {
        let path = folder.join(&stored.file);
        let sha256 = lightpeft_assets::sha256_file(&path).map_err(|e| Error::file(&path, e))?;
        if sha256 != stored.sha256 {
            return Err(Error::file(
                &path,
                format!(
                    "changed since dataset `{name}` was saved (sha256 {sha256}, recorded {}); save it again under a new name",
                    stored.sha256
                ),
            ));
        }
    }
    Ok(load_custom(
        &custom_layout(&manifest),
        &folder.join(&manifest.train.file),
        &folder.join(&manifest.dev.file),
    )?)
}

/// Removes a saved dataset.
pub fn delete(data_dir: &Path, name: &str) -> Result<()> {
    manifest(data_dir, name)?;
    let folder = datasets_dir(data_dir).join(name);
    std::fs::remove_dir_all(&folder).map_err(|e| Error::file(&folder, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightpeft_engine::data::Objective;

    fn columns() -> DatasetColumns {
        DatasetColumns {
            text: "review".into(),
            text_pair: None,
            label: "stars".into(),
        }
    }

    fn save(data: &Path, name: &str, train: &Path, dev: &Path) -> Result<SavedDataset> {
        create(
            data,
            name,
            &columns(),
            DatasetLabels::Classes,
            true,
            train,
            dev,
        )
    }

    #[test]
    fn a_saved_dataset_loads_back_and_refuses_changed_files() {
        let data = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let train = files.path().join("mine.csv");
        let dev = files.path().join("held.csv");
        std::fs::write(&train, "review,stars\ngood,pos\nbad,neg\nfine,pos\n,neg\n").unwrap();
        std::fs::write(&dev, "review,stars\nok,pos\n").unwrap();
        let saved = save(data.path(), "reviews", &train, &dev).unwrap();
        assert_eq!(saved.labels, ["neg", "pos"]);
        assert_eq!(saved.train.label_counts, [1, 2]);
        assert_eq!(saved.train.file, "train.csv");
        assert_eq!(saved.skipped, 1);
        assert_eq!(manifest(data.path(), "reviews").unwrap(), saved);
        assert_eq!(list(data.path()).unwrap(), std::slice::from_ref(&saved));
        let dataset = load(data.path(), "reviews").unwrap();
        assert_eq!(dataset.objective, Objective::Classification);
        assert_eq!(dataset.train.len(), 3);

        // The name is taken; a bad name and a bad file leave nothing behind.
        let taken = save(data.path(), "reviews", &train, &dev).unwrap_err();
        assert!(taken.to_string().contains("exists already"), "{taken}");
        assert!(save(data.path(), "../up", &train, &dev).is_err());
        std::fs::write(&dev, "text,stars\nok,pos\n").unwrap();
        let bad = save(data.path(), "other", &train, &dev).unwrap_err();
        assert!(bad.to_string().contains("no `review` column"), "{bad}");
        let left: Vec<_> = std::fs::read_dir(datasets_dir(data.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["reviews"]);

        // A file edited after saving is refused.
        let stored = datasets_dir(data.path()).join("reviews/train.csv");
        std::fs::write(&stored, "review,stars\ngood,neg\nbad,pos\n").unwrap();
        let changed = load(data.path(), "reviews").unwrap_err().to_string();
        assert!(
            changed.contains("changed since dataset `reviews` was saved"),
            "{changed}"
        );
        delete(data.path(), "reviews").unwrap();
        assert!(list(data.path()).unwrap().is_empty());
        let gone = load(data.path(), "reviews").unwrap_err().to_string();
        assert!(gone.contains("no dataset named `reviews`"), "{gone}");
    }
}
