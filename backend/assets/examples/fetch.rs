//! Fetches bundled assets into a data directory.
//!
//! Usage: `cargo run -p lightpeft-assets --example fetch -- [DATA_DIR] [ASSET...]`
//! DATA_DIR defaults to the usual data directory; ASSET is minilm, vader or bigbench
//! (default: minilm and vader).

use std::path::PathBuf;
use std::process::ExitCode;

use lightpeft_assets::{AssetId, FetchStatus, default_data_dir, fetch};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let data_dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(default_data_dir);
    let ids: Vec<AssetId> = match args.map(|a| a.parse()).collect() {
        Ok(ids) => ids,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let ids = if ids.is_empty() {
        AssetId::DEFAULT.to_vec()
    } else {
        ids
    };
    match fetch(&data_dir, &ids, &mut |line| println!("{line}")) {
        Ok(fetched) => {
            for asset in fetched {
                let status = match asset.status {
                    FetchStatus::AlreadyPresent => "already present",
                    FetchStatus::Extracted { downloaded: true } => "downloaded and extracted",
                    FetchStatus::Extracted { downloaded: false } => "extracted",
                };
                println!("{}: {status}", asset.id);
                for file in asset.files {
                    let pin = if file.pinned {
                        ""
                    } else {
                        " (no published hash)"
                    };
                    println!("  {}  {}{pin}", file.sha256, file.path.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
