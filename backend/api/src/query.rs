//! Query strings of the read endpoints, shared by the server (which parses them) and the
//! dashboard (which builds them), so a renamed field or value breaks the build, not a request.

use serde::{Deserialize, Serialize};

use crate::rest::{JobStatus, MaskKind, NeuronOrder};

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// `GET /jobs` filters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    /// Only jobs of this experiment.
    pub experiment_id: Option<i64>,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
}

/// A step range and a point budget (`GET /jobs/{id}/scalars`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// First step (default 0).
    #[cfg_attr(feature = "openapi", param(minimum = 0))]
    pub from: Option<i64>,
    /// Last step (default: the newest); not before `from`.
    #[cfg_attr(feature = "openapi", param(minimum = 0))]
    pub to: Option<i64>,
    /// At most this many points, evenly spread, the last always kept (default 1000; 0 = all).
    #[cfg_attr(feature = "openapi", param(maximum = 100_000))]
    pub max_points: Option<usize>,
}

/// Which snapshot and how to lay it out (`GET /jobs/{id}/heatmap`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct HeatmapQuery {
    /// `head` or `neuron`.
    pub kind: MaskKind,
    /// Step (default: the newest snapshot); the nearest kept snapshot at or before it is used.
    pub step: Option<i64>,
    /// Columns per layer for neurons (default 64; 0 = every neuron). Heads are never binned.
    pub bins: Option<usize>,
    /// `binned` (index order) or `sorted` (ascending values).
    pub order: Option<NeuronOrder>,
}

/// A mask family and a point budget (`GET /jobs/{id}/mask-summary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// `head` or `neuron`.
    pub kind: MaskKind,
    /// At most this many steps (default 200; 0 = all).
    pub max_points: Option<usize>,
}

/// One step, or the planner's average (`GET /jobs/{id}/importance`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ImportanceQuery {
    /// Step; without it, the average over the second half of the steps (what the planner
    /// uses).
    pub step: Option<i64>,
}

/// Ratios the convergence signal uses (`GET /jobs/{id}/convergence`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ConvergenceQuery {
    /// Head ratio (default: the experiment's).
    #[cfg_attr(feature = "openapi", param(minimum = 0.0, maximum = 1.0))]
    pub head_ratio: Option<f64>,
    /// FFN ratio (default: the experiment's).
    #[cfg_attr(feature = "openapi", param(minimum = 0.0, maximum = 1.0))]
    pub ffn_ratio: Option<f64>,
}

/// Which recorded arrays `GET /jobs/{id}/arrays` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ArrayKind {
    /// Every kept head-mask snapshot, layers × heads.
    Head,
    /// Every kept neuron-mask snapshot, layers × neurons.
    Neuron,
    /// Every step's module importance ratios.
    Module,
    /// Every step's per-rank importances, modules × ranks.
    Rank,
}

impl ArrayKind {
    /// Every kind, in the order the dashboard offers them.
    pub const ALL: [ArrayKind; 4] = [
        ArrayKind::Head,
        ArrayKind::Neuron,
        ArrayKind::Module,
        ArrayKind::Rank,
    ];

    /// The snake_case name (as in the query string and the file name).
    pub fn as_str(self) -> &'static str {
        match self {
            ArrayKind::Head => "head",
            ArrayKind::Neuron => "neuron",
            ArrayKind::Module => "module",
            ArrayKind::Rank => "rank",
        }
    }

    /// The mask family of a snapshot kind; `None` for importances.
    pub fn mask(self) -> Option<MaskKind> {
        match self {
            ArrayKind::Head => Some(MaskKind::Head),
            ArrayKind::Neuron => Some(MaskKind::Neuron),
            ArrayKind::Module | ArrayKind::Rank => None,
        }
    }
}

/// The file format of `GET /jobs/{id}/arrays`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ArrayFormat {
    /// `step,row,column,value` lines.
    #[default]
    Csv,
    /// One float32 tensor per step, named `step_N`.
    Safetensors,
}

impl ArrayFormat {
    /// The snake_case name, which is also the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            ArrayFormat::Csv => "csv",
            ArrayFormat::Safetensors => "safetensors",
        }
    }
}

/// Which arrays, in which format (`GET /jobs/{id}/arrays`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ArraysQuery {
    /// `head`, `neuron`, `module` or `rank`.
    pub kind: ArrayKind,
    /// `csv` (default) or `safetensors`.
    pub format: Option<ArrayFormat>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_names_are_their_serde_names() {
        for kind in ArrayKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        for format in [ArrayFormat::Csv, ArrayFormat::Safetensors] {
            let json = serde_json::to_string(&format).unwrap();
            assert_eq!(json, format!("\"{}\"", format.as_str()));
        }
    }
}

/// `POST /datasets/uploads`: what the file is called, and how to preview it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The file's name: no folder, ending .csv, .tsv or .jsonl (which says how it is read).
    pub name: String,
    /// Whether a CSV/TSV file's first row names its columns (default true).
    #[serde(default = "first_row_names_columns")]
    pub header: bool,
}

/// `GET /datasets/uploads/{id}`: how to preview the upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// Whether a CSV/TSV file's first row names its columns (default true).
    #[serde(default = "first_row_names_columns")]
    pub header: bool,
}

fn first_row_names_columns() -> bool {
    true
}

/// A study's table as a file (`GET /studies/{id}/export`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `csv` (one row per configuration) or `json` (the whole report).
    pub format: ExportFormat,
}

/// A file format of [`ExportQuery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// The study report's JSON.
    Json,
}
