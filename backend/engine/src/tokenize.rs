//! Tokenisation with a Hugging Face `tokenizer.json`, and dynamic padding into batches.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::{EncodeInput, Tokenizer, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// One tokenised example, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, with the special tokens.
    pub ids: Vec<u32>,
    /// Segment ids (0 for the first text, 1 for the second in BERT pairs).
    pub type_ids: Vec<u32>,
}

/// A padded batch, ready for the encoder.
pub struct Batch {
    /// `[batch, seq]` u32.
    pub input_ids: Tensor,
    /// `[batch, seq]` u32.
    pub type_ids: Tensor,
    /// `[batch, seq]` u32: 1 on real tokens, 0 on padding.
    pub attention_mask: Tensor,
}

/// A tokenizer that truncates to a maximum length and never pads by itself.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    path: PathBuf,
    max_len: usize,
}

impl TextEncoder {
    /// Loads `tokenizer.json`, disables its padding and sets truncation to `max_len` tokens.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let fail = |message: String| Error::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        if max_len < 4 {
            return Err(fail(format!(
                "max length {max_len} leaves no room for text"
            )));
        }
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| fail(e.to_string()))?;
        // Shipped tokenizer files may pad every input to a fixed length; batches are padded
        // to their own longest example instead.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(|e| fail(e.to_string()))?;
        Ok(TextEncoder {
            tokenizer,
            path: path.to_path_buf(),
            max_len,
        })
    }

    /// The truncation length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokenises single texts or pairs.
    pub fn encode(&self, texts: &[(&str, Option<&str>)]) -> Result<Vec<Encoded>> {
        let inputs: Vec<EncodeInput> = texts
            .iter()
            .map(|(a, b)| match b {
                Some(b) => EncodeInput::Dual((*a).into(), (*b).into()),
                None => EncodeInput::Single((*a).into()),
            })
            .collect();
        let encodings =
            self.tokenizer
                .encode_batch(inputs, true)
                .map_err(|e| Error::Tokenizer {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
        Ok(encodings
            .into_iter()
            .map(|e| Encoded {
                ids: e.get_ids().to_vec(),
                type_ids: e.get_type_ids().to_vec(),
            })
            .collect())
    }
}

impl Batch {
    /// Pads `examples` to the longest one with `pad_id`.
    pub fn pad(examples: &[&Encoded], pad_id: u32, device: &Device) -> Result<Self> {
        let len = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if len == 0 {
            return Err(crate::error::invalid("batch", "no tokens to batch"));
        }
        let n = examples.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut types = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in examples {
            let pad = len - e.ids.len();
            ids.extend(
                e.ids
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad_id, pad)),
            );
            types.extend(
                e.type_ids
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, pad)),
            );
            mask.extend(std::iter::repeat_n(1u32, e.ids.len()).chain(std::iter::repeat_n(0, pad)));
        }
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, (n, len), device)?,
            type_ids: Tensor::from_vec(types, (n, len), device)?,
            attention_mask: Tensor::from_vec(mask, (n, len), device)?,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.input_ids.dims()[0]
    }

    /// Whether the batch holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_longest_with_mask() {
        let a = Encoded {
            ids: vec![101, 7, 102],
            type_ids: vec![0, 0, 0],
        };
        let b = Encoded {
            ids: vec![101, 102],
            type_ids: vec![0, 0],
        };
        let batch = Batch::pad(&[&a, &b], 0, &Device::Cpu).unwrap();
        assert_eq!(
            batch.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![101, 7, 102], vec![101, 102, 0]]
        );
        assert_eq!(
            batch.attention_mask.to_vec2::<u32>().unwrap(),
            vec![vec![1, 1, 1], vec![1, 1, 0]]
        );
    }
}
