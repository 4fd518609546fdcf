//! Pieces the pages are built from.

pub mod chart;
pub mod compare;
pub mod datasets;
pub mod heatmap;
pub mod importance;
pub mod jobs;
pub mod masks;
pub mod pareto;
pub mod planner;
pub mod study_launch;
pub mod training;
