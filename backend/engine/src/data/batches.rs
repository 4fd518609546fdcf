//! The order examples are visited in, per epoch.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{Result, invalid};

/// Shuffles the indices `0..len` and cuts them into batches of `batch_size` (the last one may be
/// smaller).
///
/// The order depends only on `(seed, epoch)`: rerunning a job replays it, and each epoch of a
/// run gets a different one.
pub fn batches(len: usize, batch_size: usize, seed: u64, epoch: u64) -> Result<Vec<Vec<usize>>> {
    if batch_size == 0 {
        return Err(invalid("batch size", "must be at least 1"));
    }
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut stream(seed, epoch, 0));
    Ok(order.chunks(batch_size).map(<[usize]>::to_vec).collect())
}

/// Batches drawn in a window this many batches long are formed among similar lengths.
const WINDOW_BATCHES: usize = 50;

/// [`batches`], then grouped by length: the shuffled order is cut into windows of
/// [`WINDOW_BATCHES`] batches, each window is sorted by length and cut into batches, and the
/// batches are shuffled. A batch is padded to its longest example, so batches of similar
/// lengths carry little padding, while each epoch still visits every example once in an order
/// fixed by `(seed, epoch)` (not the same order as [`batches`]).
pub fn batches_by_length(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
) -> Result<Vec<Vec<usize>>> {
    let mut order = batches(lengths.len(), batch_size, seed, epoch)?.concat();
    let mut out = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for window in order.chunks_mut(WINDOW_BATCHES * batch_size) {
        // Stable: equal lengths keep their shuffled order.
        window.sort_by_key(|&i| lengths[i]);
        out.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    out.shuffle(&mut stream(seed, epoch, 1));
    Ok(out)
}

/// The random stream of `(seed, epoch)` for one use (`purpose`).
fn stream(seed: u64, epoch: u64, purpose: u64) -> StdRng {
    // The numbers go into the 32-byte seed whole, so no two triples share a stream.
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&purpose.to_le_bytes());
    StdRng::from_seed(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_appears_once_in_batches_of_the_given_size() {
        let batches = batches(10, 4, 7, 0).unwrap();
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let mut seen: Vec<usize> = batches.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn the_order_is_fixed_by_seed_and_epoch() {
        let order = |seed, epoch| batches(100, 100, seed, epoch).unwrap().concat();
        assert_eq!(order(1, 0), order(1, 0));
        assert_ne!(order(1, 0), order(1, 1));
        assert_ne!(order(1, 0), order(2, 0));
        assert_ne!(order(1, 0), (0..100).collect::<Vec<_>>());
        // Swapping seed and epoch is a different stream.
        assert_ne!(order(0, 1), order(1, 0));
    }

    #[test]
    fn length_groups_visit_every_example_once_with_less_padding() {
        // Lengths like a sentence task's: mostly short, a long tail.
        let lengths: Vec<usize> = (0..2000)
            .map(|i| 8 + (i * 7919) % 23 + (i % 97) / 3)
            .collect();
        let padded = |batches: &[Vec<usize>]| -> usize {
            batches
                .iter()
                .map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap())
                .sum()
        };
        let plain = batches(lengths.len(), 32, 5, 0).unwrap();
        let grouped = batches_by_length(&lengths, 32, 5, 0).unwrap();
        let mut seen = grouped.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        assert_eq!(grouped.len(), plain.len());
        let real: usize = lengths.iter().sum();
        assert!(
            padded(&grouped) - real < (padded(&plain) - real) / 4,
            "padding {} (grouped) vs {} (plain) over {real} real tokens",
            padded(&grouped) - real,
            padded(&plain) - real
        );
        // Fixed by seed and epoch; a new epoch is a new order.
        assert_eq!(grouped, batches_by_length(&lengths, 32, 5, 0).unwrap());
        assert_ne!(grouped, batches_by_length(&lengths, 32, 5, 1).unwrap());
        // Long batches are not all at the end.
        let longest = |b: &Vec<usize>| b.iter().map(|&i| lengths[i]).max().unwrap();
        let half = grouped.len() / 2;
        let late: usize = grouped[half..].iter().map(longest).sum();
        let early: usize = grouped[..half].iter().map(longest).sum();
        assert!(late < early * 2 && early < late * 2, "{early} vs {late}");
    }

    #[test]
    fn empty_input_gives_no_batches_and_zero_batch_size_is_rejected() {
        assert!(batches(0, 8, 0, 0).unwrap().is_empty());
        let error = batches(5, 0, 0, 0).unwrap_err();
        assert_eq!(error.to_string(), "invalid batch size: must be at least 1");
    }
}
