//! Reading pretrained tensors from a safetensors file, checked against the config's shapes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// The tensors of one checkpoint, looked up by their Hugging Face names without the
/// `bert.`/`roberta.` prefix.
pub struct Checkpoint {
    path: PathBuf,
    prefix: String,
    device: Device,
    tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Loads every tensor of `path` as f32 on `device` and detects the name prefix.
    pub fn load(path: &Path, config: &ModelConfig, device: &Device) -> Result<Self> {
        let tensors =
            read_safetensors(path, device).map_err(|(tensor, message)| Error::Weights {
                path: path.to_path_buf(),
                tensor,
                message: format!("not a readable safetensors file: {message}"),
            })?;
        Self::from_tensors(path, config, tensors)
    }

    /// Wraps tensors already in memory; `path` is only used in error messages.
    pub fn from_tensors(
        path: &Path,
        config: &ModelConfig,
        tensors: HashMap<String, Tensor>,
    ) -> Result<Self> {
        let anchor = "embeddings.word_embeddings.weight";
        let candidates = ["", config.architecture.checkpoint_prefix()];
        let prefix = candidates
            .iter()
            .find(|p| tensors.contains_key(&format!("{p}{anchor}")))
            .ok_or_else(|| Error::Weights {
                path: path.to_path_buf(),
                tensor: anchor.into(),
                message: format!(
                    "missing (also looked for `{}{anchor}`); is this a {:?} checkpoint?",
                    config.architecture.checkpoint_prefix(),
                    config.architecture
                ),
            })?;
        let device = tensors[&format!("{prefix}{anchor}")].device().clone();
        Ok(Checkpoint {
            path: path.to_path_buf(),
            prefix: prefix.to_string(),
            device,
            tensors,
        })
    }

    /// The device the tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The file the tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lookup(&self, name: &str) -> Option<(&Tensor, String)> {
        let prefixed = format!("{}{name}", self.prefix);
        if let Some(t) = self.tensors.get(&prefixed) {
            return Some((t, prefixed));
        }
        // Old BERT checkpoints name LayerNorm parameters gamma/beta.
        let legacy = prefixed
            .strip_suffix("LayerNorm.weight")
            .map(|s| format!("{s}LayerNorm.gamma"))
            .or_else(|| {
                prefixed
                    .strip_suffix("LayerNorm.bias")
                    .map(|s| format!("{s}LayerNorm.beta"))
            })?;
        self.tensors.get(&legacy).map(|t| (t, legacy))
    }

    /// Drops the checkpoint and returns the memory it held to the kernel: its copies of the
    /// weights that layers keep transposed would otherwise stay resident under the
    /// allocator's hold (see `memory::release_freed_memory`).
    pub fn close(self) {
        drop(self);
        crate::memory::release_freed_memory();
    }

    /// Whether the checkpoint holds `name` (prefix added).
    pub fn contains(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// Returns tensor `name` as f32, failing unless its shape is exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (tensor, full_name) = self.lookup(name).ok_or_else(|| Error::Weights {
            path: self.path.clone(),
            tensor: format!("{}{name}", self.prefix),
            message: "missing".into(),
        })?;
        if tensor.dims() != shape {
            return Err(Error::Weights {
                path: self.path.clone(),
                tensor: full_name,
                message: format!(
                    "has shape {:?} but the config implies {shape:?}",
                    tensor.dims()
                ),
            });
        }
        tensor.to_dtype(DType::F32).map_err(|e| Error::Weights {
            path: self.path.clone(),
            tensor: full_name,
            message: format!("cannot convert to f32: {e}"),
        })
    }
}

/// The largest safetensors header we accept (the format's own reference caps it at 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads every tensor of a safetensors file, one tensor at a time.
///
/// candle's loader reads the whole file into one buffer and copies each tensor out of it; the
/// freed buffer (the checkpoint's full size) then stays in the allocator's arenas, resident
/// for the life of the process. Reading each tensor straight into its own storage keeps the
/// peak at the tensors themselves. Errors name the tensor (or `*` for the file).
fn read_safetensors(
    path: &Path,
    device: &Device,
) -> std::result::Result<HashMap<String, Tensor>, (String, String)> {
    let whole = |message: String| ("*".to_string(), message);
    let file = File::open(path).map_err(|e| whole(e.to_string()))?;
    let file_len = file.metadata().map_err(|e| whole(e.to_string()))?.len();
    let mut file = BufReader::new(file);
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|e| whole(format!("no header length: {e}")))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES || header_len > file_len.saturating_sub(8) {
        return Err(whole(format!(
            "header of {header_len} bytes in a file of {file_len}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| whole(format!("truncated header: {e}")))?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| whole(format!("header is not JSON: {e}")))?;
    let data_start = 8 + header_len;
    let data_len = file_len - data_start;
    let mut entries = Vec::with_capacity(header.len());
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let entry: HeaderEntry =
            serde_json::from_value(entry).map_err(|e| (name.clone(), e.to_string()))?;
        entries.push((name, entry));
    }
    // In file order, so the reads are sequential.
    entries.sort_by_key(|(_, e)| e.data_offsets[0]);
    let mut tensors = HashMap::with_capacity(entries.len());
    for (name, entry) in entries {
        let tensor = read_tensor(&mut file, data_start, data_len, &entry, device)
            .map_err(|message| (name.clone(), message))?;
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

/// One tensor's line in a safetensors header.
#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

fn read_tensor(
    file: &mut BufReader<File>,
    data_start: u64,
    data_len: u64,
    entry: &HeaderEntry,
    device: &Device,
) -> std::result::Result<Tensor, String> {
    let dtype = match entry.dtype.as_str() {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "U32" => DType::U32,
        "U8" => DType::U8,
        other => return Err(format!("unsupported dtype {other}")),
    };
    let [start, end] = entry.data_offsets;
    let elements = entry
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or("shape overflows")?;
    let bytes = elements
        .checked_mul(dtype.size_in_bytes())
        .ok_or("shape overflows")?;
    if start > end || end > data_len || end - start != bytes as u64 {
        return Err(format!(
            "data offsets {start}..{end} do not hold {bytes} bytes of {:?} {:?} within the {data_len} data bytes",
            dtype, entry.shape
        ));
    }
    file.seek(SeekFrom::Start(data_start + start))
        .map_err(|e| e.to_string())?;
    let tensor = if dtype == DType::F32 {
        // Straight into the tensor's own buffer: no second copy of the largest tensors.
        let mut values = vec![0f32; elements];
        let raw: &mut [u8] = bytemuck::cast_slice_mut(&mut values);
        file.read_exact(raw)
            .map_err(|e| format!("truncated: {e}"))?;
        values
            .iter_mut()
            .for_each(|v| *v = f32::from_bits(u32::from_le(v.to_bits())));
        Tensor::from_vec(values, entry.shape.as_slice(), device)
    } else {
        let mut raw = vec![0u8; bytes];
        file.read_exact(&mut raw)
            .map_err(|e| format!("truncated: {e}"))?;
        Tensor::from_raw_buffer(&raw, dtype, &entry.shape, device)
    };
    tensor.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        file
    }

    /// A safetensors file with a hand-written `header` and `data` zero bytes after it.
    fn raw_file(header: &[u8], data: usize) -> tempfile::NamedTempFile {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.resize(bytes.len() + data, 0);
        write_file(&bytes)
    }

    #[test]
    fn reads_what_candle_writes_in_every_dtype() {
        let device = Device::Cpu;
        let values = Tensor::arange(0f32, 24.0, &device)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let mut saved = HashMap::new();
        saved.insert("f32".to_string(), values.clone());
        for dtype in [DType::F16, DType::BF16, DType::F64, DType::I64, DType::U8] {
            saved.insert(format!("{dtype:?}"), values.to_dtype(dtype).unwrap());
        }
        saved.insert("scalar".to_string(), Tensor::new(7f32, &device).unwrap());
        let file = tempfile::NamedTempFile::new().unwrap();
        candle_core::safetensors::save(&saved, file.path()).unwrap();
        let read = read_safetensors(file.path(), &device).unwrap();
        assert_eq!(read.len(), saved.len());
        for (name, want) in &saved {
            let got = &read[name];
            assert_eq!(got.dtype(), want.dtype(), "{name}");
            assert_eq!(got.dims(), want.dims(), "{name}");
            let diff = (got.to_dtype(DType::F64).unwrap() - want.to_dtype(DType::F64).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert_eq!(diff, 0.0, "{name}");
        }
    }

    #[test]
    fn names_what_is_wrong_with_a_damaged_file() {
        let device = Device::Cpu;
        let mut saved = HashMap::new();
        saved.insert(
            "w".to_string(),
            Tensor::ones((4, 4), DType::F32, &device).unwrap(),
        );
        let good = tempfile::NamedTempFile::new().unwrap();
        candle_core::safetensors::save(&saved, good.path()).unwrap();
        let bytes = std::fs::read(good.path()).unwrap();

        let truncated = write_file(&bytes[..bytes.len() - 4]);
        let (tensor, message) = read_safetensors(truncated.path(), &device).unwrap_err();
        assert_eq!(tensor, "w");
        assert!(message.contains("data offsets"), "{message}");

        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let (tensor, message) = read_safetensors(write_file(&huge).path(), &device).unwrap_err();
        assert_eq!(tensor, "*");
        assert!(message.contains("header of"), "{message}");

        let shifted = raw_file(
            br#"{"w":{"dtype":"F32","shape":[4,4],"data_offsets":[8,72]}}"#,
            64,
        );
        let (tensor, message) = read_safetensors(shifted.path(), &device).unwrap_err();
        assert_eq!(tensor, "w");
        assert!(message.contains("8..72"), "{message}");

        let complex = raw_file(
            br#"{"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#,
            8,
        );
        let (_, message) = read_safetensors(complex.path(), &device).unwrap_err();
        assert!(message.contains("unsupported dtype C64"), "{message}");

        let (_, message) = read_safetensors(write_file(b"{}").path(), &device).unwrap_err();
        assert!(message.contains("no header length"), "{message}");
    }
}
