//! Datasets from the browser: a file is uploaded (streamed into `<data>/uploads/`, size
//! capped, sha256 recorded) and previewed; two uploads and a column mapping become a saved
//! dataset (`lightpeft_pipeline::datasets`), trained as the task `dataset:NAME`.
//!
//! An upload is a raw body saying `Content-Type: application/octet-stream`, which, like JSON,
//! a cross-site form cannot send. A refused upload (too large, not text, a bad name) leaves
//! no file behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use futures_util::StreamExt;
use lightpeft_api::query::{PreviewQuery, UploadQuery};
use lightpeft_api::rest::{ColumnPreview, CreateDataset, SavedDataset, TablePreview, Upload};
use lightpeft_engine::data::Table;
use lightpeft_pipeline::datasets;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::AppState;
use super::experiments::inside_data_dir;
use super::http_error::{ApiFailure, ApiJson, ApiPath, ApiQuery, NoBody};

type ApiResult<T> = Result<T, ApiFailure>;

/// Rows a preview shows.
const PREVIEW_ROWS: usize = 5;
/// A column's distinct values are counted for the preview up to this many (label candidates).
const COUNTED_VALUES: usize = 50;
/// Characters of a previewed value.
const PREVIEW_CHARS: usize = 200;

/// The uploads folder.
fn uploads_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("uploads")
}

/// Checks an uploaded file's name: a plain name with a table extension, no folder.
fn checked_file_name(name: &str) -> ApiResult<String> {
    let bad = |why: &str| {
        ApiFailure::invalid("invalid_file_name", format!("file name `{name}`: {why}")).field("name")
    };
    if name.is_empty() || name.chars().count() > 200 {
        return Err(bad("1 to 200 characters"));
    }
    if name.contains(['/', '\\']) || name == "." || name == ".." || name.starts_with('.') {
        return Err(bad("a file name, not a path"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("control characters are not allowed"));
    }
    lightpeft_engine::data::TableFormat::of(Path::new(name))
        .map_err(|_| bad("name it .csv, .tsv or .jsonl"))?;
    Ok(name.to_string())
}

/// An upload's id: 32 hex digits, unique to this server's life and its clock.
fn new_upload_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = Sha256::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.update(nanos.to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The stored file of an upload id, refusing ids that are not one of ours (no path can be
/// named through it).
fn upload_path(data_dir: &Path, id: &str) -> ApiResult<PathBuf> {
    let well_formed = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let not_found = || ApiFailure::not_found(format!("no upload `{id}`"));
    if !well_formed {
        return Err(not_found());
    }
    let dir = uploads_dir(data_dir);
    let entries = std::fs::read_dir(&dir).map_err(|_| not_found())?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{id}-")) && !n.ends_with(".partial"))
        })
        .ok_or_else(not_found)
}

/// What the user named an upload (the stored name after `{id}-`).
fn uploaded_name(path: &Path) -> String {
    let stored = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    stored
        .split_once('-')
        .map_or(stored, |(_, name)| name)
        .to_string()
}

/// A table's columns (with their distinct values counted where they are few) and first rows.
fn preview(table: &Table) -> TablePreview {
    let short = |value: &Option<String>| {
        value
            .as_ref()
            .map(|v| v.chars().take(PREVIEW_CHARS).collect::<String>())
    };
    let columns = table
        .columns
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let mut counts: Vec<(String, usize)> = Vec::new();
            let mut few = true;
            for row in &table.rows {
                let Some(value) = row.values[c].as_deref().filter(|v| !v.trim().is_empty()) else {
                    continue;
                };
                if let Some((_, n)) = counts.iter_mut().find(|(v, _)| v == value) {
                    *n += 1;
                } else if counts.len() < COUNTED_VALUES {
                    counts.push((value.to_string(), 1));
                } else {
                    few = false;
                    break;
                }
            }
            counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            ColumnPreview {
                name: name.clone(),
                values: few.then_some(counts),
            }
        })
        .collect();
    TablePreview {
        columns,
        rows: table
            .rows
            .iter()
            .take(PREVIEW_ROWS)
            .map(|row| row.values.iter().map(short).collect())
            .collect(),
        row_count: table.rows.len(),
    }
}

/// Reads an upload as a table, with the data directory's path kept out of errors.
async fn read_upload(data_dir: &Path, path: PathBuf, header: bool) -> ApiResult<TablePreview> {
    let dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        lightpeft_engine::data::read_table(&path, header)
            .map(|table| preview(&table))
            .map_err(|e| {
                let message = e
                    .to_string()
                    .replace(&path.display().to_string(), &uploaded_name(&path));
                ApiFailure::unprocessable("bad_data", inside_data_dir(&dir, &message))
            })
    })
    .await
    .map_err(|e| ApiFailure::internal(format!("preview thread: {e}")))?
}

/// Uploads one CSV, TSV or JSON-lines file (the raw body, `Content-Type:
/// application/octet-stream`) and answers its preview; `dataset` operations name it by id.
#[utoipa::path(post, path = "/datasets/uploads", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes."),
    responses((status = 201, body = Upload),
        (status = 400, body = lightpeft_api::rest::ErrorBody),
        (status = 413, description = "Larger than the server's upload limit; nothing was kept.", body = lightpeft_api::rest::ErrorBody),
        (status = 422, description = "Not a readable CSV, TSV or JSON-lines text file; nothing was kept.", body = lightpeft_api::rest::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<Upload>)> {
    let name = checked_file_name(&query.name)?;
    let dir = uploads_dir(&state.data_dir);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiFailure::internal(format!("uploads folder: {e}")))?;
    let id = new_upload_id();
    let stored = dir.join(format!("{id}-{name}"));
    let partial = dir.join(format!("{id}.partial"));
    let received = receive(body, &partial, state.max_upload_bytes).await;
    let (bytes, sha256) = match received {
        Ok(done) => done,
        Err(failure) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(failure);
        }
    };
    let preview = match tokio::fs::rename(&partial, &stored).await {
        Ok(()) => read_upload(&state.data_dir, stored.clone(), query.header).await,
        Err(e) => Err(ApiFailure::internal(format!("keeping the upload: {e}"))),
    };
    let preview = match preview {
        Ok(preview) => preview,
        Err(failure) => {
            let _ = tokio::fs::remove_file(&partial).await;
            let _ = tokio::fs::remove_file(&stored).await;
            return Err(failure);
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(Upload {
            id,
            name,
            bytes,
            sha256,
            preview,
        }),
    ))
}

/// Streams a body into `path`, refusing it once it passes `limit` bytes.
async fn receive(body: Body, path: &Path, limit: u64) -> ApiResult<(u64, String)> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiFailure::internal(format!("upload file: {e}")))?;
    let mut stream = body.into_data_stream();
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiFailure::invalid("upload_interrupted", format!("the upload broke off: {e}"))
        })?;
        bytes += chunk.len() as u64;
        if bytes > limit {
            return Err(ApiFailure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the file is larger than the upload limit of {} MiB (the server's --max-upload-mib)",
                    limit >> 20
                ),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiFailure::internal(format!("writing the upload: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiFailure::internal(format!("writing the upload: {e}")))?;
    if bytes == 0 {
        return Err(ApiFailure::unprocessable("bad_data", "the file is empty"));
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((bytes, sha256))
}

/// An upload's preview again, e.g. read without a header row.
#[utoipa::path(get, path = "/datasets/uploads/{id}", params(("id" = String, Path, description = "The upload's id."), PreviewQuery),
    responses((status = 200, body = TablePreview), (status = 422, body = lightpeft_api::rest::ErrorBody)))]
pub async fn upload_preview(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PreviewQuery>,
) -> ApiResult<Json<TablePreview>> {
    let path = upload_path(&state.data_dir, &id)?;
    Ok(Json(
        read_upload(&state.data_dir, path, query.header).await?,
    ))
}

/// Saves two uploads as a named dataset through a column mapping; the uploads are used up.
#[utoipa::path(post, path = "/datasets", request_body = CreateDataset,
    responses((status = 201, body = SavedDataset), (status = 400, body = lightpeft_api::rest::ErrorBody),
        (status = 404, description = "An upload it names does not exist (or has gone).", body = lightpeft_api::rest::ErrorBody),
        (status = 409, description = "A dataset of that name exists.", body = lightpeft_api::rest::ErrorBody),
        (status = 422, description = "The files do not read through the mapping (a missing column, a dev label train lacks); the uploads are kept.", body = lightpeft_api::rest::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateDataset>,
) -> ApiResult<(StatusCode, Json<SavedDataset>)> {
    datasets::validate_name(&req.name)
        .map_err(|e| ApiFailure::invalid("invalid_name", e.to_string()).field("name"))?;
    if datasets::manifest(&state.data_dir, &req.name).is_ok() {
        return Err(
            ApiFailure::conflict(format!("a dataset named `{}` exists already", req.name))
                .field("name"),
        );
    }
    let train =
        upload_path(&state.data_dir, &req.train_upload).map_err(|e| e.field("train_upload"))?;
    let dev = upload_path(&state.data_dir, &req.dev_upload).map_err(|e| e.field("dev_upload"))?;
    let data_dir = state.data_dir.clone();
    let (train_name, dev_name) = (uploaded_name(&train), uploaded_name(&dev));
    let saved = tokio::task::spawn_blocking(move || {
        let saved = datasets::create(
            &data_dir,
            &req.name,
            &req.columns,
            req.label_kind,
            req.header,
            &train,
            &dev,
        );
        if saved.is_ok() {
            let _ = std::fs::remove_file(&train);
            let _ = std::fs::remove_file(&dev);
        }
        saved.map_err(|e| {
            let message = e
                .to_string()
                .replace(&train.display().to_string(), &train_name)
                .replace(&dev.display().to_string(), &dev_name);
            ApiFailure::unprocessable("bad_data", inside_data_dir(&data_dir, &message))
        })
    })
    .await
    .map_err(|e| ApiFailure::internal(format!("dataset thread: {e}")))??;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// Every saved dataset, by name.
#[utoipa::path(get, path = "/datasets", responses((status = 200, body = Vec<SavedDataset>)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<SavedDataset>>> {
    datasets::list(&state.data_dir)
        .map(Json)
        .map_err(|e| ApiFailure::internal(inside_data_dir(&state.data_dir, &e.to_string())))
}

/// Removes a saved dataset, unless an experiment trains on it.
#[utoipa::path(delete, path = "/datasets/{dataset}", params(("dataset" = String, Path, description = "The dataset's name.")),
    responses((status = 204), (status = 409, description = "An experiment uses it.", body = lightpeft_api::rest::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    _: NoBody,
) -> ApiResult<StatusCode> {
    datasets::manifest(&state.data_dir, &name)
        .map_err(|_| ApiFailure::not_found(format!("no dataset `{name}`")))?;
    let task = format!("{}{name}", datasets::TASK_PREFIX);
    if let Some(user) = state
        .store
        .experiments()
        .await?
        .into_iter()
        .find(|e| e.task == task)
    {
        return Err(ApiFailure::conflict(format!(
            "experiment {} (`{}`) trains on dataset `{name}`; delete it first",
            user.id, user.name
        )));
    }
    datasets::delete(&state.data_dir, &name)
        .map_err(|e| ApiFailure::internal(inside_data_dir(&state.data_dir, &e.to_string())))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_are_plain_table_files() {
        assert_eq!(checked_file_name("reviews.csv").unwrap(), "reviews.csv");
        for bad in [
            "../x.csv",
            "a/b.csv",
            "a\\b.csv",
            ".hidden.csv",
            "x.exe",
            "",
            "a\nb.csv",
        ] {
            assert!(checked_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn upload_ids_are_unique_and_name_no_path() {
        let (a, b) = (new_upload_id(), new_upload_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../../etc/passwd", "x", &a[..31]] {
            assert!(upload_path(dir.path(), bad).is_err(), "{bad}");
        }
    }
}
