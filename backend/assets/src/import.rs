//! Importing a user's own Hugging Face model folder into the data directory.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::catalog::bundled_model_dir;
use crate::error::{AssetError, Result, io_err};
use crate::extract::{file_has_sha256, sha256_file, write_verified};

/// Files every imported model must have.
pub const REQUIRED_MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// Files copied along when present (WordPiece or BPE vocabularies, tokenizer settings).
pub const OPTIONAL_MODEL_FILES: [&str; 5] = [
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Longest accepted model name; well under every file system's name limit.
const MAX_MODEL_NAME_LEN: usize = 128;

/// Where a model named `name` lives: `<data_dir>/models/<name>`. Does not check the name.
pub fn model_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("models").join(name)
}

/// Checks that `name` is a safe single path component: ASCII letters, digits, `-`, `_` and
/// `.`, not starting with `.` (which also rules out `.` and `..`), at most 128 characters.
pub fn validate_model_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_MODEL_NAME_LEN {
        Some("it is longer than 128 characters")
    } else if name.starts_with('.') {
        Some("it starts with '.'")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("only ASCII letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(AssetError::InvalidModelName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Copies a Hugging Face model folder's files into `<data_dir>/models/<name>/` and returns
/// that directory.
///
/// `config.json`, `model.safetensors` and `tokenizer.json` are required (checked before
/// anything is copied); the files in [`OPTIONAL_MODEL_FILES`] are copied when present.
/// Symlinks, as in a Hugging Face cache snapshot, are followed. Idempotent: files already
/// there with the same sha256 are skipped, and each copy goes through a temporary file and is
/// verified before it replaces anything. The model's contents are not validated here.
pub fn import_model_dir(src: &Path, data_dir: &Path, name: &str) -> Result<PathBuf> {
    validate_model_name(name)?;
    let dest_dir = model_dir(data_dir, name);
    if dest_dir == bundled_model_dir(data_dir) {
        return Err(AssetError::InvalidModelName {
            name: name.to_string(),
            reason: "it is reserved for the bundled model",
        });
    }
    if !src.is_dir() {
        return Err(AssetError::NotADirectory {
            path: src.to_path_buf(),
        });
    }
    if let Some(file) = REQUIRED_MODEL_FILES
        .into_iter()
        .find(|file| !src.join(file).is_file())
    {
        return Err(AssetError::MissingModelFile {
            dir: src.to_path_buf(),
            file,
        });
    }
    let present = REQUIRED_MODEL_FILES
        .into_iter()
        .chain(OPTIONAL_MODEL_FILES)
        .filter(|file| src.join(file).is_file());
    for file in present {
        copy_if_changed(&src.join(file), &dest_dir.join(file))?;
    }
    Ok(dest_dir)
}

fn copy_if_changed(src: &Path, dest: &Path) -> Result<()> {
    let sha = sha256_file(src)?;
    if file_has_sha256(dest, &sha)? {
        return Ok(());
    }
    let reader = File::open(src).map_err(io_err("opening", src))?;
    // Checking against the hash taken above catches a source that changed during the copy.
    write_verified(reader, dest, Some(&sha)).map(drop)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn unsafe_model_names_are_rejected() {
        let too_long = "a".repeat(129);
        for name in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "a\\b",
            "with space",
            "naïve",
            "x\0y",
            too_long.as_str(),
        ] {
            let err = validate_model_name(name).unwrap_err();
            assert!(
                matches!(err, AssetError::InvalidModelName { .. }),
                "{name:?}: {err}"
            );
        }
    }

    #[test]
    fn ordinary_model_names_are_accepted() {
        for name in ["bert-base-uncased", "my_model.v2", "MiniLM-L12", "a..b"] {
            validate_model_name(name).unwrap();
        }
    }

    #[test]
    fn the_bundled_model_directory_cannot_be_overwritten() {
        let data = tempfile::tempdir().unwrap();
        let err = import_model_dir(data.path(), data.path(), "all-MiniLM-L6-v2").unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    fn hf_folder(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in files {
            fs::write(dir.path().join(name), data).unwrap();
        }
        dir
    }

    #[test]
    fn missing_tokenizer_json_is_named_and_nothing_is_copied() {
        let src = hf_folder(&[("config.json", b"{}"), ("model.safetensors", b"w")]);
        let data = tempfile::tempdir().unwrap();

        let err = import_model_dir(src.path(), data.path(), "mine").unwrap_err();

        match &err {
            AssetError::MissingModelFile { dir, file } => {
                assert_eq!(dir, src.path());
                assert_eq!(*file, "tokenizer.json");
            }
            other => panic!("expected MissingModelFile, got {other}"),
        }
        assert!(err.to_string().contains("tokenizer.json"));
        assert!(!data.path().join("models").exists());
    }

    #[test]
    fn a_file_instead_of_a_folder_is_reported() {
        let data = tempfile::tempdir().unwrap();
        let file = data.path().join("model.safetensors");
        fs::write(&file, b"w").unwrap();
        let err = import_model_dir(&file, data.path(), "mine").unwrap_err();
        assert!(matches!(err, AssetError::NotADirectory { path } if path == file));
    }

    fn full_folder() -> tempfile::TempDir {
        hf_folder(&[
            ("config.json", b"{}"),
            ("model.safetensors", b"weights"),
            ("tokenizer.json", b"tok"),
            ("vocab.txt", b"[PAD]\n"),
            ("pytorch_model.bin", b"ignored"),
        ])
    }

    #[test]
    fn import_copies_the_known_files_only() {
        let src = full_folder();
        let data = tempfile::tempdir().unwrap();

        let dir = import_model_dir(src.path(), data.path(), "mine").unwrap();

        assert_eq!(dir, data.path().join("models/mine"));
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let expected = [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocab.txt",
        ];
        assert_eq!(names, expected);
        assert_eq!(fs::read(dir.join("model.safetensors")).unwrap(), b"weights");
    }

    #[cfg(unix)]
    #[test]
    fn reimport_skips_identical_files_and_replaces_changed_ones() {
        use std::os::unix::fs::MetadataExt;
        let src = full_folder();
        let data = tempfile::tempdir().unwrap();
        let dir = import_model_dir(src.path(), data.path(), "mine").unwrap();
        let inode = |name: &str| fs::metadata(dir.join(name)).unwrap().ino();
        let config_inode = inode("config.json");
        fs::write(src.path().join("tokenizer.json"), b"tok v2").unwrap();

        import_model_dir(src.path(), data.path(), "mine").unwrap();

        // A skipped file keeps its inode; a replaced one was renamed over.
        assert_eq!(inode("config.json"), config_inode);
        assert_eq!(fs::read(dir.join("tokenizer.json")).unwrap(), b"tok v2");
    }
}
