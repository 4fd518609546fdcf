//! Where a run's artifacts go. The pipeline names them (`stage1/`, `model/`, `hf-peft/`,
//! `estimation.json`, `checkpoints/<step>/`); the store decides where that is: a folder today
//! (`runs/<name>/` for the CLI, `jobs/<id>/` for the server), an object store later.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The stage-1 model export an estimation leaves for its fine-tunings.
pub const STAGE1: &str = "stage1";
/// The trained model of a fine-tuning or baseline run (lightpeft's export format).
pub const MODEL: &str = "model";
/// The same model for Hugging Face PEFT (unpruned LoRA baselines only).
pub const HF_PEFT: &str = "hf-peft";
/// What the planner needs from an estimation.
pub const ESTIMATION: &str = "estimation.json";
/// Resumable snapshots, one folder per next step.
pub const CHECKPOINTS: &str = "checkpoints";

/// The name of the snapshot that continues at `next_step`.
pub fn checkpoint_name(next_step: usize) -> String {
    format!("{CHECKPOINTS}/{next_step}")
}

/// A run's artifact storage. The engine's exporters write folders of files, so a store hands
/// out local folders to write into and is told when one is complete ([`ArtifactStore::seal`]);
/// an object store would upload it then.
pub trait ArtifactStore {
    /// Stores the small file `name` whole.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// A local folder for the multi-file artifact `name`, created if needed.
    fn folder(&self, name: &str) -> Result<PathBuf>;

    /// Declares the folder of `name` complete.
    fn seal(&self, _name: &str) -> Result<()> {
        Ok(())
    }

    /// Removes the artifact `name`, e.g. a folder an exporter gave up on.
    fn discard(&self, name: &str) -> Result<()>;

    /// A local folder holding the stored artifact `name` (a snapshot to resume from).
    fn fetch(&self, name: &str) -> Result<PathBuf>;
}

/// Artifacts as files under one folder.
#[derive(Debug, Clone)]
pub struct RunFolder {
    root: PathBuf,
}

impl RunFolder {
    /// Artifacts under `root` (created on the first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunFolder { root: root.into() }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        // Names come from this crate, but a name that climbs out would write elsewhere.
        if name.is_empty() || name.split('/').any(|part| part.is_empty() || part == "..") {
            return Err(Error::Usage(format!(
                "artifact name `{name}` is not a plain path"
            )));
        }
        Ok(self.root.join(name))
    }
}

impl ArtifactStore for RunFolder {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(name)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| Error::file(&path, e))
    }

    fn folder(&self, name: &str) -> Result<PathBuf> {
        let path = self.path(name)?;
        std::fs::create_dir_all(&path).map_err(|e| Error::file(&path, e))?;
        Ok(path)
    }

    fn discard(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match gone {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::file(&path, e)),
            _ => Ok(()),
        }
    }

    fn fetch(&self, name: &str) -> Result<PathBuf> {
        let path = self.path(name)?;
        if path.is_dir() {
            Ok(path)
        } else {
            Err(Error::file(path, "no such artifact"))
        }
    }
}

/// A store for runs that keep nothing (an evaluation); every write is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nowhere;

impl ArtifactStore for Nowhere {
    fn put(&self, name: &str, _bytes: &[u8]) -> Result<()> {
        Err(Error::Usage(format!(
            "this run keeps no files (asked to store {name})"
        )))
    }

    fn folder(&self, name: &str) -> Result<PathBuf> {
        self.put(name, &[]).map(|()| PathBuf::new())
    }

    fn discard(&self, _name: &str) -> Result<()> {
        Ok(())
    }

    fn fetch(&self, name: &str) -> Result<PathBuf> {
        Err(Error::Usage(format!(
            "this run keeps no files (asked for {name})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_keeps_files_and_folders_under_its_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunFolder::new(dir.path().join("run"));
        store.put(ESTIMATION, b"{}").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("run/estimation.json")).unwrap(),
            b"{}"
        );
        let snap = store.folder(&checkpoint_name(8)).unwrap();
        assert_eq!(snap, dir.path().join("run/checkpoints/8"));
        assert_eq!(store.fetch("checkpoints/8").unwrap(), snap);
        assert!(store.fetch("checkpoints/9").is_err());
        store.discard("checkpoints/8").unwrap();
        assert!(!snap.exists());
        store.discard("checkpoints/8").unwrap();
        for bad in ["../x", "a//b", "", "a/.."] {
            assert!(store.put(bad, b"x").is_err(), "{bad}");
        }
        assert!(Nowhere.put(MODEL, b"").is_err());
    }
}
