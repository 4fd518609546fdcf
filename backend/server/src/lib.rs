//! The `lightpeft` library: the pipelines behind the command line and the server, so that
//! tests (and other binaries) can call them in-process; `main.rs` is only the argument parser.

pub mod bench;
pub mod commands;
pub mod device_check;
pub mod error;
pub mod param_args;
pub mod progress;
pub mod server;
pub mod study_client;
