//! The train/dev rule for data without published splits: a stable hash, never file order.

/// One example in this many goes to dev.
const DEV_ONE_IN: u64 = 10;

/// Whether an example whose split key is `key` belongs to dev (about 10%).
///
/// The rule depends only on the key's bytes, so it survives reordering, appending and
/// re-downloading the file, and is the same on every platform and Rust version.
pub(crate) fn is_dev(key: &str) -> bool {
    split_hash(key.as_bytes()).is_multiple_of(DEV_ONE_IN)
}

/// Whether an integer id belongs to dev: `id % 10 == 0`, the rule assets.md §2.1 used for VADER.
pub(crate) fn is_dev_id(id: u64) -> bool {
    id.is_multiple_of(DEV_ONE_IN)
}

/// 64-bit FNV-1a, then MurmurHash3's `fmix64` finaliser. FNV-1a is tiny and fixed by its
/// published constants (std's `DefaultHasher` may change between releases), but alone its low
/// and high bits barely move when keys differ in one character: 65 of 300 near-identical
/// sentences landed in dev. The finaliser spreads every input bit over the whole word.
fn split_hash(bytes: &[u8]) -> u64 {
    fmix64(fnv1a_64(bytes))
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_published_test_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_split_hash_is_pinned() {
        // Changing it would move examples between train and dev of saved runs.
        assert_eq!(fmix64(0), 0);
        assert_eq!(split_hash(b"a"), 0x82a2_a958_a9be_ce5b);
    }

    #[test]
    fn about_one_in_ten_near_identical_keys_go_to_dev() {
        for template in ["example {}", "Premise: dog {} runs. Hypothesis: it runs."] {
            let dev = (0..10_000)
                .filter(|i| is_dev(&template.replace("{}", &i.to_string())))
                .count();
            assert!((900..1100).contains(&dev), "{template}: {dev}");
        }
    }

    #[test]
    fn integer_ids_split_on_their_last_digit() {
        assert!(is_dev_id(0) && is_dev_id(10) && is_dev_id(10_600));
        assert!(!is_dev_id(1) && !is_dev_id(19));
    }
}
