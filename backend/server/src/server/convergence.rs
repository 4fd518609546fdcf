//! The convergence signal: how much the set a plan would prune still changes between
//! snapshots.

use axum::Json;
use axum::extract::State;
use lightpeft_api::query::ConvergenceQuery;
use lightpeft_api::rest::{Convergence, MaskKind};

use super::AppState;
use super::analysis::{set_distance, set_keys};
use super::http_error::{ApiFailure, ApiQuery, PathId};

type ApiResult<T> = Result<T, ApiFailure>;

/// How much the set a plan would prune still changes between consecutive snapshots (Jaccard
/// distance of the pruned sets): near 0 means estimation has settled.
#[utoipa::path(get, path = "/jobs/{id}/convergence", params(("id" = i64, Path), ConvergenceQuery),
    responses((status = 200, body = Convergence)))]
pub async fn convergence(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiQuery(q): ApiQuery<ConvergenceQuery>,
) -> ApiResult<Json<Convergence>> {
    let job = state.store.job(id).await?;
    let params = state.store.experiment(job.experiment_id).await?.params;
    let check = |name: &str, v: Option<f64>, default: f64| -> ApiResult<f64> {
        let v = v.unwrap_or(default);
        if !(0.0..=1.0).contains(&v) {
            return Err(ApiFailure::invalid(
                "invalid_param",
                format!("{name}: {v} is outside [0, 1]"),
            )
            .field(name));
        }
        Ok(v)
    };
    let head_ratio = check("head_ratio", q.head_ratio, params.head_ratio)?;
    let ffn_ratio = check("ffn_ratio", q.ffn_ratio, params.ffn_ratio)?;
    let mut out = Convergence {
        steps: Vec::new(),
        head_change: Vec::new(),
        neuron_change: Vec::new(),
        head_ratio,
        ffn_ratio,
    };
    let steps = state.store.snapshot_steps(id, MaskKind::Head).await?;
    let keys = set_keys(id, &params, head_ratio, ffn_ratio);
    let mut sets = {
        let mut cache = state.pruned_sets.lock().expect("pruned sets");
        keys.map(|k| cache.take(k))
    };
    for (key, sets) in keys.iter().zip(&mut sets) {
        // Steps that retention deleted leave; new steps are computed once.
        sets.retain(|step, _| steps.binary_search(step).is_ok());
        for &step in &steps {
            if let std::collections::btree_map::Entry::Vacant(slot) = sets.entry(step) {
                let masks = state.store.snapshot(id, key.kind, step).await?;
                let pruned = key.pruned(&masks).map_err(|e| {
                    ApiFailure::internal(format!("step {step} {} masks: {e}", key.kind.as_str()))
                })?;
                slot.insert(pruned);
            }
        }
    }
    // Both kinds are snapshotted at the same steps.
    let heads: Vec<(&i64, &Vec<bool>)> = sets[0].iter().collect();
    let neurons: Vec<&Vec<bool>> = sets[1].values().collect();
    for i in 1..heads.len().min(neurons.len()) {
        out.steps.push(*heads[i].0);
        out.head_change
            .push(set_distance(heads[i - 1].1, heads[i].1));
        out.neuron_change
            .push(set_distance(neurons[i - 1], neurons[i]));
    }
    {
        let mut cache = state.pruned_sets.lock().expect("pruned sets");
        for (key, sets) in keys.into_iter().zip(sets) {
            cache.put(key, sets);
        }
    }
    Ok(Json(out))
}
