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
    // Both numbers go into the 32-byte seed whole, so no two (seed, epoch) pairs share a stream.
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut StdRng::from_seed(key));
    Ok(order.chunks(batch_size).map(<[usize]>::to_vec).collect())
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
    fn empty_input_gives_no_batches_and_zero_batch_size_is_rejected() {
        assert!(batches(0, 8, 0, 0).unwrap().is_empty());
        let error = batches(5, 0, 0, 0).unwrap_err();
        assert_eq!(error.to_string(), "invalid batch size: must be at least 1");
    }
}
