//! Where jobs keep their files: one layout, `jobs/<id>/<name>`, in a local folder (the data
//! directory by default, or one that every worker mounts) or in an object store that machines
//! share (`--artifacts s3://bucket/prefix`).
//!
//! The engine's exporters write folders of local files, so a job always writes into a local
//! folder: in place for a folder store; for an object store, into a staging folder under the
//! data directory's `cache/artifacts/` that is uploaded when the pipeline seals it (large files
//! in parts, never whole in memory). Reads go through the store: downloads stream from it, and
//! the stage-1 model a fine-tuning starts from, the model an evaluation scores and the snapshot
//! a resumed job continues from are copied into the cache on the machine that needs them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use lightpeft_pipeline::{self as pipeline, ArtifactStore, RunFolder};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};

/// Files at least this large are uploaded in parts of this size.
const PART: usize = 8 * 1024 * 1024;

/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Marks a local copy of a stored folder as complete; a copy cut short has none.
const COMPLETE: &str = ".lightpeft-complete";

/// How long the start-up check may take to reach an object store.
const REACH: std::time::Duration = std::time::Duration::from_secs(20);

/// The artifact storage every job of this process writes to and reads from.
#[derive(Clone)]
pub struct Artifacts {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    /// Every key starts with it (`<prefix>/jobs/<id>/<name>`); empty for a folder.
    prefix: String,
    /// Set for a folder store: jobs write into it in place.
    folder: Option<PathBuf>,
    /// Staging folders and local copies of an object store's folders.
    cache: PathBuf,
    /// Where the store is, for start-up lines and errors (no credentials).
    location: String,
}

impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Artifacts")
            .field(&self.inner.location)
            .finish()
    }
}

fn failed(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Artifacts(format!("{what}: {e}"))
}

impl Artifacts {
    /// The store `--artifacts` names: none is the data directory; a path or `file://` URL a
    /// local folder (one that every worker mounts, say); `s3://bucket/prefix` an S3-compatible
    /// store, its endpoint, region and credentials from the usual `AWS_*` variables
    /// (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint). Nothing is reached yet: see
    /// [`Artifacts::check_reachable`].
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Artifacts> {
        let Some(url) = url else {
            return Artifacts::folder(data_dir);
        };
        if let Some(path) = url.strip_prefix("file://") {
            return Artifacts::folder(Path::new(path));
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            if url.contains("://") {
                return Err(Error::Usage(format!(
                    "--artifacts {url}: give a folder, file:///path or s3://bucket/prefix"
                )));
            }
            return Artifacts::folder(Path::new(url));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Usage(format!("--artifacts {url}: no bucket")));
        }
        // reqwest's rustls takes the process's crypto provider; sqlx already links ring's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| failed(format!("--artifacts {url}"), e))?;
        Ok(Artifacts::objects(
            Arc::new(store),
            prefix.trim_matches('/'),
            &data_dir.join("cache").join("artifacts"),
            url,
        ))
    }

    /// A folder store rooted at `root` (job folders at `root/jobs/<id>/`).
    pub fn folder(root: &Path) -> Result<Artifacts> {
        std::fs::create_dir_all(root).map_err(|e| Error::file(root, e))?;
        let store =
            LocalFileSystem::new_with_prefix(root).map_err(|e| failed(root.display(), e))?;
        Ok(Artifacts {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                prefix: String::new(),
                folder: Some(root.to_path_buf()),
                cache: root.join("cache").join("artifacts"),
                location: root.display().to_string(),
            }),
        })
    }

    /// Any object store, keys under `prefix`, staging and local copies under `cache`.
    pub fn objects(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        cache: &Path,
        location: &str,
    ) -> Artifacts {
        Artifacts {
            inner: Arc::new(Inner {
                store,
                prefix: prefix.to_string(),
                folder: None,
                cache: cache.to_path_buf(),
                location: location.to_string(),
            }),
        }
    }

    /// Where the store is (no credentials).
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// Lists the store once, so that a wrong bucket, endpoint or key fails at start rather
    /// than at the end of the first job.
    pub async fn check_reachable(&self) -> Result<()> {
        let probe = self.key(&["jobs"]);
        let listed = async { self.inner.store.list(Some(&probe)).next().await.transpose() };
        match tokio::time::timeout(REACH, listed).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(failed(format!("--artifacts {}", self.location()), e)),
            Err(_) => Err(Error::Artifacts(format!(
                "--artifacts {}: no answer within {} s",
                self.location(),
                REACH.as_secs()
            ))),
        }
    }

    fn key(&self, parts: &[&str]) -> Key {
        let mut text = self.inner.prefix.clone();
        for part in parts {
            if !text.is_empty() {
                text.push('/');
            }
            text.push_str(part);
        }
        Key::from(text.as_str())
    }

    fn job_key(&self, id: i64, name: &str) -> Key {
        let id = id.to_string();
        if name.is_empty() {
            self.key(&["jobs", &id])
        } else {
            self.key(&["jobs", &id, name])
        }
    }

    fn cached(&self, id: i64, name: &str) -> PathBuf {
        self.inner
            .cache
            .join("jobs")
            .join(id.to_string())
            .join(name)
    }

    /// The job's files under `name` (a folder or one file; every file when empty), as names
    /// relative to the job and sizes in bytes, sorted by name.
    pub async fn list(&self, id: i64, name: &str) -> Result<Vec<(String, u64)>> {
        let under = self.job_key(id, name);
        let job = self.job_key(id, "");
        let metas: Vec<_> = match self.inner.store.list(Some(&under)).try_collect().await {
            Ok(metas) => metas,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(failed(format!("listing job {id}'s {name}"), e)),
        };
        let mut files: Vec<(String, u64)> = metas
            .into_iter()
            .filter_map(|meta| {
                let parts: Vec<String> = meta
                    .location
                    .prefix_match(&job)?
                    .map(|p| p.as_ref().to_string())
                    .collect();
                Some((parts.join("/"), meta.size))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// The whole of one small file (the estimation summary).
    pub async fn read(&self, id: i64, name: &str) -> Result<Vec<u8>> {
        let got = self.inner.store.get(&self.job_key(id, name)).await;
        let bytes = async { got?.bytes().await }.await;
        bytes
            .map(|b| b.to_vec())
            .map_err(|e| failed(format!("job {id}'s {name}"), e))
    }

    /// One file as a stream of chunks, with its size in bytes.
    pub async fn stream(
        &self,
        id: i64,
        name: &str,
    ) -> Result<(u64, BoxStream<'static, std::io::Result<Bytes>>)> {
        let got = (self.inner.store.get(&self.job_key(id, name)).await)
            .map_err(|e| failed(format!("job {id}'s {name}"), e))?;
        let size = got.meta.size;
        let chunks = got.into_stream().map_err(std::io::Error::other).boxed();
        Ok((size, chunks))
    }

    /// Removes everything job `id` kept, and its local copies.
    pub async fn remove_job(&self, id: i64) -> Result<()> {
        self.delete_under(&self.job_key(id, "")).await?;
        if let Some(root) = &self.inner.folder {
            remove_dir(&root.join("jobs").join(id.to_string()))?;
        }
        remove_dir(&self.inner.cache.join("jobs").join(id.to_string()))
    }

    /// [`Artifacts::remove_job`] after the job's row is gone: a failure leaves only files
    /// behind, so it is logged rather than answered.
    pub async fn remove_job_logged(&self, id: i64) {
        if let Err(e) = self.remove_job(id).await {
            tracing::warn!(job_id = id, error = %e, "the deleted job's files were not all removed");
        }
    }

    /// Removes every resumable snapshot of job `id` older than the one continuing at `keep`.
    /// Newer ones stay: the pipeline may be uploading the next snapshot while this runs.
    pub async fn keep_only_checkpoint(&self, id: i64, keep: usize) -> Result<()> {
        let mut older = std::collections::BTreeSet::new();
        for (name, _) in self.list(id, pipeline::store::CHECKPOINTS).await? {
            if let Some(step) = name.split('/').nth(1).and_then(|s| s.parse::<usize>().ok())
                && step < keep
            {
                older.insert(step);
            }
        }
        for step in older {
            let name = pipeline::store::checkpoint_name(step);
            self.delete_under(&self.job_key(id, &name)).await?;
            if let Some(root) = &self.inner.folder {
                remove_dir(&root.join("jobs").join(id.to_string()).join(&name))?;
            }
            remove_dir(&self.cached(id, &name))?;
        }
        Ok(())
    }

    async fn delete_under(&self, under: &Key) -> Result<()> {
        let store = &self.inner.store;
        let keys = store.list(Some(under)).map_ok(|meta| meta.location).boxed();
        let deleted = store
            .delete_stream(keys)
            .try_for_each(|_| async { Ok(()) })
            .await;
        match deleted {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed(format!("deleting {under}"), e)),
        }
    }

    /// A local folder holding job `id`'s stored folder `name`: the folder itself for a folder
    /// store; for an object store a copy in the cache, downloaded once.
    pub async fn local_copy(&self, id: i64, name: &str) -> Result<PathBuf> {
        if let Some(root) = &self.inner.folder {
            let path = root.join("jobs").join(id.to_string()).join(name);
            return if path.is_dir() {
                Ok(path)
            } else {
                Err(Error::file(&path, format!("job {id} has no {name}")))
            };
        }
        let dir = self.cached(id, name);
        if dir.join(COMPLETE).is_file() {
            return Ok(dir);
        }
        let files = self.list(id, name).await?;
        if files.is_empty() {
            return Err(Error::Artifacts(format!(
                "job {id} has no {name} in {}",
                self.location()
            )));
        }
        // Into a fresh folder beside the copy, renamed into place once whole.
        let partial = dir.with_extension(format!("partial-{}", std::process::id()));
        remove_dir(&partial)?;
        let prefix = format!("{name}/");
        for (file, _) in &files {
            let relative = file.strip_prefix(&prefix).unwrap_or(file);
            self.download(id, file, &partial.join(relative)).await?;
        }
        std::fs::write(partial.join(COMPLETE), b"").map_err(|e| Error::file(&partial, e))?;
        remove_dir(&dir)?;
        std::fs::rename(&partial, &dir).map_err(|e| Error::file(&dir, e))?;
        Ok(dir)
    }

    async fn download(&self, id: i64, name: &str, to: &Path) -> Result<()> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e))?;
        }
        let (_, mut chunks) = self.stream(id, name).await?;
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(|e| Error::file(to, e))?;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| failed(format!("job {id}'s {name}"), e))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::file(to, e))?;
        }
        file.flush().await.map_err(|e| Error::file(to, e))
    }

    /// Uploads every file under the local folder `from` as job `id`'s `name`, replacing what
    /// was stored there.
    async fn upload_folder(&self, id: i64, name: &str, from: &Path) -> Result<()> {
        self.delete_under(&self.job_key(id, name)).await?;
        let mut pending = vec![from.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| Error::file(&dir, e))?;
            for entry in entries {
                let path = entry.map_err(|e| Error::file(&dir, e))?.path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(from).expect("walked from `from`");
                let relative = relative.to_string_lossy().replace('\\', "/");
                if relative == COMPLETE {
                    continue;
                }
                self.upload_file(&path, &self.job_key(id, &format!("{name}/{relative}")))
                    .await?;
            }
        }
        Ok(())
    }

    async fn upload_file(&self, path: &Path, key: &Key) -> Result<()> {
        let store = &self.inner.store;
        let size = std::fs::metadata(path)
            .map_err(|e| Error::file(path, e))?
            .len();
        if size < PART as u64 {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| Error::file(path, e))?;
            return (store.put(key, PutPayload::from(bytes)).await)
                .map(drop)
                .map_err(|e| failed(format!("uploading {key}"), e));
        }
        let upload =
            (store.put_multipart(key).await).map_err(|e| failed(format!("uploading {key}"), e))?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::file(path, e))?;
        let mut buffer = vec![0u8; PART];
        loop {
            let n = match file.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = parts.abort().await;
                    return Err(Error::file(path, e));
                }
            };
            if let Err(e) = parts.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = parts.abort().await;
                return Err(failed(format!("uploading {key}"), e));
            }
            parts.write(&buffer[..n]);
        }
        (parts.finish().await)
            .map(drop)
            .map_err(|e| failed(format!("uploading {key}"), e))
    }

    /// Job `id`'s artifacts as the pipeline writes them, from a job's blocking thread.
    pub fn for_job(&self, id: i64, handle: tokio::runtime::Handle) -> JobArtifacts {
        JobArtifacts {
            artifacts: self.clone(),
            id,
            handle,
            in_place: (self.inner.folder.as_ref())
                .map(|root| RunFolder::new(root.join("jobs").join(id.to_string()))),
        }
    }
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::file(path, e)),
        _ => Ok(()),
    }
}

/// One job's artifacts for the pipeline, which runs on a blocking thread (each call waits on
/// the runtime through `handle`).
pub struct JobArtifacts {
    artifacts: Artifacts,
    id: i64,
    handle: tokio::runtime::Handle,
    /// A folder store's job folder, written in place.
    in_place: Option<RunFolder>,
}

impl JobArtifacts {
    fn wait<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> pipeline::Result<T> {
        self.handle
            .block_on(work)
            .map_err(|e| pipeline::Error::Artifact(e.to_string()))
    }
}

impl ArtifactStore for JobArtifacts {
    fn put(&self, name: &str, bytes: &[u8]) -> pipeline::Result<()> {
        if let Some(folder) = &self.in_place {
            return folder.put(name, bytes);
        }
        let key = self.artifacts.job_key(self.id, name);
        let payload = PutPayload::from(bytes.to_vec());
        self.wait(async {
            (self.artifacts.inner.store.put(&key, payload).await)
                .map(drop)
                .map_err(|e| failed(format!("uploading {key}"), e))
        })
    }

    fn folder(&self, name: &str) -> pipeline::Result<PathBuf> {
        if let Some(folder) = &self.in_place {
            return folder.folder(name);
        }
        let staging = self.artifacts.cached(self.id, name);
        let fresh = remove_dir(&staging)
            .and_then(|()| std::fs::create_dir_all(&staging).map_err(|e| Error::file(&staging, e)));
        fresh.map_err(|e| pipeline::Error::Artifact(e.to_string()))?;
        Ok(staging)
    }

    fn seal(&self, name: &str) -> pipeline::Result<()> {
        if let Some(folder) = &self.in_place {
            return folder.seal(name);
        }
        let staging = self.artifacts.cached(self.id, name);
        self.wait(self.artifacts.upload_folder(self.id, name, &staging))?;
        // The staging folder is now a complete local copy.
        std::fs::write(staging.join(COMPLETE), b"").map_err(|e| pipeline::Error::file(&staging, e))
    }

    fn discard(&self, name: &str) -> pipeline::Result<()> {
        if let Some(folder) = &self.in_place {
            return folder.discard(name);
        }
        self.wait(async {
            (self.artifacts)
                .delete_under(&self.artifacts.job_key(self.id, name))
                .await?;
            remove_dir(&self.artifacts.cached(self.id, name))
        })
    }

    fn fetch(&self, name: &str) -> pipeline::Result<PathBuf> {
        if let Some(folder) = &self.in_place {
            return folder.fetch(name);
        }
        self.wait(self.artifacts.local_copy(self.id, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightpeft_pipeline::store::{ESTIMATION, MODEL, checkpoint_name};

    /// An object store kept in a folder (standing in for a bucket), with its own cache.
    fn object_store(root: &Path) -> Artifacts {
        let bucket = root.join("bucket");
        std::fs::create_dir_all(&bucket).unwrap();
        let store = LocalFileSystem::new_with_prefix(&bucket).unwrap();
        Artifacts::objects(Arc::new(store), "team/run", &root.join("cache"), "test")
    }

    fn write_model(dir: &Path, big: usize) {
        std::fs::write(dir.join("config.json"), b"{}").unwrap();
        let weights: Vec<u8> = (0..big).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    }

    #[test]
    fn an_object_store_keeps_sealed_folders_and_hands_them_to_another_machine() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let root = tempfile::tempdir().unwrap();
        let writer = object_store(root.path());
        let job = writer.for_job(7, runtime.handle().clone());
        // Over one part, so it goes up in parts.
        let big = PART + PART / 2 + 3;
        let thread = std::thread::spawn(move || {
            job.put(ESTIMATION, b"{\"a\":1}").unwrap();
            let dir = job.folder(MODEL).unwrap();
            write_model(&dir, big);
            job.seal(MODEL).unwrap();
            let snap = job.folder(&checkpoint_name(10)).unwrap();
            std::fs::write(snap.join("state.json"), b"10").unwrap();
            job.seal(&checkpoint_name(10)).unwrap();
            let snap = job.folder(&checkpoint_name(20)).unwrap();
            std::fs::write(snap.join("state.json"), b"20").unwrap();
            job.seal(&checkpoint_name(20)).unwrap();
            job.folder("hf-peft").unwrap();
            job.discard("hf-peft").unwrap();
            assert!(job.fetch("checkpoints/30").is_err());
        });
        thread.join().unwrap();
        // Keys sit under the prefix in the bucket's layout.
        let stored = root
            .path()
            .join("bucket/team/run/jobs/7/model/model.safetensors");
        assert_eq!(std::fs::metadata(&stored).unwrap().len(), big as u64);

        // Another machine: same bucket, its own (empty) cache.
        let other = tempfile::tempdir().unwrap();
        let bucket = LocalFileSystem::new_with_prefix(root.path().join("bucket")).unwrap();
        let reader = Artifacts::objects(Arc::new(bucket), "team/run", other.path(), "test");
        runtime.block_on(async {
            let names: Vec<String> = (reader.list(7, "").await.unwrap())
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            assert_eq!(
                names,
                [
                    "checkpoints/10/state.json",
                    "checkpoints/20/state.json",
                    "estimation.json",
                    "model/config.json",
                    "model/model.safetensors",
                ]
            );
            assert_eq!(reader.read(7, ESTIMATION).await.unwrap(), b"{\"a\":1}");
            let (size, chunks) = reader.stream(7, "model/model.safetensors").await.unwrap();
            assert_eq!(size, big as u64);
            let streamed: Vec<Bytes> = chunks.try_collect().await.unwrap();
            let streamed: Vec<u8> = streamed.concat();
            assert_eq!(streamed, std::fs::read(&stored).unwrap());

            let copy = reader.local_copy(7, MODEL).await.unwrap();
            assert!(copy.starts_with(other.path()));
            assert_eq!(
                std::fs::read(copy.join("model.safetensors")).unwrap(),
                streamed
            );
            assert!(reader.local_copy(8, MODEL).await.is_err());

            reader.keep_only_checkpoint(7, 20).await.unwrap();
            let left: Vec<String> = (reader.list(7, "checkpoints").await.unwrap())
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            assert_eq!(left, ["checkpoints/20/state.json"]);
            // A newer snapshot (one being uploaded meanwhile) is never taken.
            reader.keep_only_checkpoint(7, 15).await.unwrap();
            assert_eq!(reader.list(7, "checkpoints").await.unwrap().len(), 1);

            reader.remove_job(7).await.unwrap();
            assert!(reader.list(7, "").await.unwrap().is_empty());
            assert!(!copy.exists());
        });
    }

    #[test]
    fn a_folder_store_writes_in_place_under_jobs() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let root = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::folder(root.path()).unwrap();
        let job = artifacts.for_job(3, runtime.handle().clone());
        let dir = std::thread::spawn(move || {
            let dir = job.folder(MODEL).unwrap();
            write_model(&dir, 100);
            job.seal(MODEL).unwrap();
            dir
        })
        .join()
        .unwrap();
        assert_eq!(dir, root.path().join("jobs/3/model"));
        runtime.block_on(async {
            let listed = artifacts.list(3, MODEL).await.unwrap();
            assert_eq!(
                listed,
                [
                    ("model/config.json".to_string(), 2),
                    ("model/model.safetensors".to_string(), 100)
                ]
            );
            assert_eq!(artifacts.local_copy(3, MODEL).await.unwrap(), dir);
            artifacts.remove_job(3).await.unwrap();
            assert!(!root.path().join("jobs/3").exists());
            assert!(artifacts.list(3, "").await.unwrap().is_empty());
        });
    }

    #[test]
    fn an_unknown_scheme_is_refused_by_name() {
        let root = tempfile::tempdir().unwrap();
        let e = Artifacts::open(Some("gs://bucket"), root.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("s3://bucket/prefix"), "{e}");
    }
}
