//! Downloads: the files a job wrote, and its recorded arrays as CSV or safetensors.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use lightpeft_api::query::{ArrayFormat, ArrayKind, ArraysQuery};
use lightpeft_api::rest::Artifact;
use lightpeft_pipeline::store::{ESTIMATION, HF_PEFT, MODEL, STAGE1};
use safetensors::{Dtype, tensor::TensorView};

use super::AppState;
use super::http_error::{ApiFailure, ApiPath, ApiQuery, PathId};

type ApiResult<T> = Result<T, ApiFailure>;

/// What each downloadable part of a job is: its folder (or file) and a description.
const OFFERED: [(&str, &str); 4] = [
    (
        STAGE1,
        "stage-1 model (masks, PEFT and head), lightpeft export",
    ),
    (
        MODEL,
        "trained model, pruned when a plan was applied (safetensors + config + tokenizer)",
    ),
    (
        HF_PEFT,
        "Hugging Face PEFT adapter of the unpruned LoRA model",
    ),
    (
        ESTIMATION,
        "final masks and averaged importances the planner reads",
    ),
];

/// What a job's artifacts offer for download, by name (resumable snapshots are internal),
/// from one listing of the job.
async fn artifacts_of(state: &AppState, id: i64) -> ApiResult<Vec<Artifact>> {
    let files =
        (state.artifacts.list(id, "").await).map_err(|e| ApiFailure::internal(e.to_string()))?;
    let mut out = Vec::new();
    for (part, what) in OFFERED {
        // The file itself, or a folder's own files (an exporter writes no subfolders).
        let offered = files.iter().filter(|(name, _)| {
            name == part
                || name
                    .strip_prefix(part)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|rest| !rest.contains('/'))
        });
        out.extend(offered.map(|(name, bytes)| Artifact {
            name: name.clone(),
            bytes: *bytes,
            description: what.to_string(),
        }));
    }
    Ok(out)
}

/// Files a job wrote.
#[utoipa::path(get, path = "/jobs/{id}/artifacts", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<Artifact>)))]
pub async fn artifacts(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<Json<Vec<Artifact>>> {
    state.store.job(id).await?;
    Ok(Json(artifacts_of(&state, id).await?))
}

/// Downloads one artifact by the name `/artifacts` lists (nothing else is reachable),
/// streamed from the artifact store.
#[utoipa::path(get, path = "/jobs/{id}/artifacts/{*name}", params(("id" = i64, Path), ("name" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn artifact(
    State(state): State<AppState>,
    ApiPath((id, name)): ApiPath<(i64, String)>,
) -> ApiResult<Response> {
    state.store.job(id).await?;
    if !artifacts_of(&state, id)
        .await?
        .iter()
        .any(|a| a.name == name)
    {
        return Err(ApiFailure::not_found(format!(
            "job {id} has no artifact `{name}`"
        )));
    }
    let (size, chunks) = (state.artifacts.stream(id, &name).await)
        .map_err(|e| ApiFailure::internal(e.to_string()))?;
    let filename = name.rsplit('/').next().unwrap_or("file").replace('"', "");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

fn download(bytes: Vec<u8>, filename: &str, mime: &str) -> Response {
    let disposition = format!("attachment; filename=\"{}\"", filename.replace('"', ""));
    (
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from(bytes),
    )
        .into_response()
}

/// Every kept snapshot of masks, or every step's importances, as CSV or safetensors.
#[utoipa::path(get, path = "/jobs/{id}/arrays", params(("id" = i64, Path), ArraysQuery),
    responses((status = 200, description = "CSV, or safetensors with `format=safetensors`",
        content((String = "text/csv"), (Vec<u8> = "application/octet-stream"))),
        (status = 400, body = lightpeft_api::rest::ErrorBody)))]
pub async fn arrays(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiQuery(q): ApiQuery<ArraysQuery>,
) -> ApiResult<Response> {
    let format = q.format.unwrap_or_default();
    state.store.job(id).await?;
    // (step, rows × columns)
    let mut arrays: Vec<(i64, Vec<Vec<f64>>)> = Vec::new();
    match q.kind.mask() {
        Some(kind) => {
            for step in state.store.snapshot_steps(id, kind).await? {
                let layers = state.store.snapshot(id, kind, step).await?;
                let rows = layers
                    .iter()
                    .map(|l| l.iter().map(|&v| v as f64).collect())
                    .collect();
                arrays.push((step, rows));
            }
        }
        None => {
            let modules = state.store.job_modules(id).await?;
            let n = modules
                .and_then(|m| serde_json::from_str::<Vec<String>>(&m).ok())
                .map_or(1, |m| m.len().max(1));
            for (step, values) in state.store.importances(id, q.kind.as_str()).await? {
                let width = if q.kind == ArrayKind::Module {
                    values.len()
                } else {
                    values.len() / n
                };
                let rows = values.chunks(width.max(1)).map(<[f64]>::to_vec).collect();
                arrays.push((step, rows));
            }
        }
    }
    let name = format!("job{id}-{}.{}", q.kind.as_str(), format.as_str());
    match format {
        ArrayFormat::Csv => Ok(download(csv_bytes(&arrays), &name, "text/csv")),
        ArrayFormat::Safetensors => Ok(download(
            safetensors_bytes(&arrays)?,
            &name,
            "application/octet-stream",
        )),
    }
}

/// `step,row,column,value` lines under a header.
fn csv_bytes(arrays: &[(i64, Vec<Vec<f64>>)]) -> Vec<u8> {
    let mut text = String::from("step,row,column,value\n");
    for (step, rows) in arrays {
        for (r, row) in rows.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                text.push_str(&format!("{step},{r},{c},{v}\n"));
            }
        }
    }
    text.into_bytes()
}

/// One float32 tensor `step_N` (rows × columns) per step.
fn safetensors_bytes(arrays: &[(i64, Vec<Vec<f64>>)]) -> ApiResult<Vec<u8>> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = arrays
        .iter()
        .map(|(step, rows)| {
            let cols = rows.first().map_or(0, Vec::len);
            let bytes = rows
                .iter()
                .flatten()
                .flat_map(|v| (*v as f32).to_le_bytes())
                .collect();
            (format!("step_{step}"), vec![rows.len(), cols], bytes)
        })
        .collect();
    let views = data
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiFailure::internal(format!("arrays: {e}")))?;
    safetensors::serialize(views.iter().map(|(name, view)| (*name, view)), None)
        .map_err(|e| ApiFailure::internal(format!("arrays: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_arrays_read_back() {
        let arrays = vec![
            (0, vec![vec![1.0, 2.0], vec![3.0, 4.0]]),
            (5, vec![vec![0.5, 0.25], vec![0.125, 8.0]]),
        ];
        let bytes = safetensors_bytes(&arrays).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (step, rows) in &arrays {
            let view = file.tensor(&format!("step_{step}")).unwrap();
            assert_eq!(view.dtype(), Dtype::F32);
            assert_eq!(view.shape(), &[2, 2]);
            let values: Vec<f32> = view
                .data()
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let want: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
            assert_eq!(values, want);
        }
    }

    #[test]
    fn csv_lists_every_value_under_a_header() {
        let text = String::from_utf8(csv_bytes(&[(3, vec![vec![1.5], vec![2.0]])])).unwrap();
        assert_eq!(text, "step,row,column,value\n3,0,0,1.5\n3,1,0,2\n");
    }
}
