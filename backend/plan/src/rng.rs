//! SplitMix64 (Steele, Lea and Flood): tiny, seedable and with an output fixed by its
//! definition, so a seed means the same random-pruning ablation in every build and on every
//! platform, the browser included.

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator's increment, the golden ratio in 64 bits.
    pub const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    /// A generator whose first output is `mix(seed + GAMMA)`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        mix(self.0)
    }

    /// Uniform in `0..bound`, without modulo bias (Lemire's multiply-and-reject). `bound`
    /// must be positive.
    pub fn below(&mut self, bound: usize) -> usize {
        let bound = bound as u64;
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as usize;
            }
        }
    }

    /// Moves `count` uniformly drawn elements to the front of `pool`, in draw order. The first
    /// k draws do not depend on `count`, so a larger count extends a smaller one.
    pub fn shuffle_prefix(&mut self, pool: &mut [usize], count: usize) {
        for i in 0..count {
            let j = i + self.below(pool.len() - i);
            pool.swap(i, j);
        }
    }
}

/// SplitMix64's output function, also a good 64-bit hash for deriving independent seeds.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_follow_the_published_sequence() {
        // The first outputs for seed 0 in the reference implementation (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn a_larger_prefix_extends_a_smaller_one() {
        let draw = |count| {
            let mut pool: Vec<usize> = (0..20).collect();
            SplitMix64::new(9).shuffle_prefix(&mut pool, count);
            pool.truncate(count);
            pool
        };
        let (few, many) = (draw(5), draw(12));
        assert_eq!(few[..], many[..5]);
        let mut sorted = many.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 12, "no element drawn twice: {many:?}");
    }
}
