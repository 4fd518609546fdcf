//! Hashing, crash-safe file writes and member extraction from zip and tar.gz archives.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::catalog::ArchiveFormat;
use crate::error::{AssetError, Result, io_err};

/// Computes the sha256 of a file's contents, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let mut sink = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut sink).map_err(io_err("reading", path))?;
    Ok(sink.finish().1)
}

/// Whether `path` exists and its contents hash to `expected`.
pub(crate) fn file_has_sha256(path: &Path, expected: &str) -> Result<bool> {
    if !path.is_file() {
        return Ok(false);
    }
    Ok(sha256_file(path)? == expected)
}

/// A writer that hashes everything written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Returns the inner writer and the hex digest of what went through.
    fn finish(self) -> (W, String) {
        let digest = self.hasher.finalize();
        let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
        (self.inner, hex)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A temporary file beside its destination, deleted on drop unless renamed into place.
/// Writing there and renaming means an interrupted or failed run never leaves a partial or
/// unverified file under the final name.
struct PartialFile {
    path: PathBuf,
    kept: bool,
}

impl PartialFile {
    fn beside(dest: &Path) -> Self {
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let path = dest.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        Self { path, kept: false }
    }

    fn rename_to(mut self, dest: &Path) -> Result<()> {
        fs::rename(&self.path, dest).map_err(io_err("renaming into place", dest))?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.kept {
            // Best effort: the file may not have been created at all.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Streams `reader` into `dest` through a temporary file, checks the sha256 against `expected`
/// (when given) and only then renames it into place. Returns the sha256.
pub(crate) fn write_verified(
    mut reader: impl Read,
    dest: &Path,
    expected: Option<&str>,
) -> Result<String> {
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).map_err(io_err("creating directory", dir))?;
    }
    let partial = PartialFile::beside(dest);
    let file = File::create(&partial.path).map_err(io_err("creating", &partial.path))?;
    let mut writer = HashingWriter::new(BufWriter::new(file));
    io::copy(&mut reader, &mut writer).map_err(io_err("writing", &partial.path))?;
    let (buffered, actual) = writer.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| io_err("writing", &partial.path)(e.into_error()))?;
    // Flush to disk before the rename so a crash cannot leave an empty file under the real name.
    file.sync_all().map_err(io_err("syncing", &partial.path))?;
    if let Some(expected) = expected
        && actual != expected
    {
        return Err(AssetError::ShaMismatch {
            path: dest.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    partial.rename_to(dest)?;
    Ok(actual)
}

/// One member to take out of an archive.
#[derive(Debug)]
pub(crate) struct Extraction<'a> {
    /// The member's exact path inside the archive.
    pub member: String,
    /// Where it goes.
    pub dest: PathBuf,
    /// Its published sha256, if any.
    pub expected: Option<&'a str>,
}

/// Extracts the wanted members of `archive`, each verified and renamed into place.
/// Returns their sha256 values, in the order of `wanted`.
pub(crate) fn extract_members(
    archive: &Path,
    format: ArchiveFormat,
    wanted: &[Extraction],
) -> Result<Vec<String>> {
    match format {
        ArchiveFormat::Zip => extract_from_zip(archive, wanted),
        ArchiveFormat::TarGz => extract_from_tar_gz(archive, wanted),
    }
}

fn extract_from_zip(archive: &Path, wanted: &[Extraction]) -> Result<Vec<String>> {
    let file = File::open(archive).map_err(io_err("opening", archive))?;
    let zip_error = |source| AssetError::Zip {
        path: archive.to_path_buf(),
        source,
    };
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(zip_error)?;
    wanted
        .iter()
        .map(|w| {
            let member = match zip.by_name(&w.member) {
                Err(zip::result::ZipError::FileNotFound) => Err(missing(archive, w)),
                other => other.map_err(zip_error),
            }?;
            write_verified(member, &w.dest, w.expected)
        })
        .collect()
}

/// Reads the archive once, front to back, so even a large sdist is streamed rather than
/// unpacked; stops as soon as every wanted member has been seen.
fn extract_from_tar_gz(archive: &Path, wanted: &[Extraction]) -> Result<Vec<String>> {
    let file = File::open(archive).map_err(io_err("opening", archive))?;
    let mut tar = tar::Archive::new(MultiGzDecoder::new(BufReader::new(file)));
    let mut hashes: Vec<Option<String>> = vec![None; wanted.len()];
    let read_error = || io_err("reading tar archive", archive);
    for entry in tar.entries().map_err(read_error())? {
        let entry = entry.map_err(read_error())?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(read_error())?.into_owned();
        if let Some(i) = wanted.iter().position(|w| Path::new(&w.member) == path) {
            hashes[i] = Some(write_verified(entry, &wanted[i].dest, wanted[i].expected)?);
            if hashes.iter().all(Option::is_some) {
                break;
            }
        }
    }
    wanted
        .iter()
        .zip(hashes)
        .map(|(w, hash)| hash.ok_or_else(|| missing(archive, w)))
        .collect()
}

fn missing(archive: &Path, wanted: &Extraction) -> AssetError {
    AssetError::MemberMissing {
        archive: archive.to_path_buf(),
        member: wanted.member.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), ABC_SHA256);
        fs::write(&path, b"").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn sha256_of_missing_file_names_the_path() {
        let err = sha256_file(Path::new("/nonexistent/lightpeft/x")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/lightpeft/x"),
            "{err}"
        );
    }

    #[test]
    fn write_verified_keeps_matching_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/out.txt");
        let sha = write_verified(&b"abc"[..], &dest, Some(ABC_SHA256)).unwrap();
        assert_eq!(sha, ABC_SHA256);
        assert_eq!(fs::read(&dest).unwrap(), b"abc");
        assert_eq!(fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn write_verified_rejects_mismatch_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        let err = write_verified(&b"abd"[..], &dest, Some(ABC_SHA256)).unwrap_err();
        match err {
            AssetError::ShaMismatch {
                path,
                expected,
                actual,
            } => {
                assert_eq!(path, dest);
                assert_eq!(expected, ABC_SHA256);
                assert_ne!(actual, ABC_SHA256);
            }
            other => panic!("expected ShaMismatch, got {other}"),
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
