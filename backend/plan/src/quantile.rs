//! NumPy 1.25's quantile and the reference's aggregation of per-step importances (§4.3, §5.1).
//! See the crate docs for why the quantile is written the way it is.

use std::cmp::Ordering;

use crate::error::{Result, invalid};
use crate::validate::check_fraction;

/// Value types [`numpy_quantile`] accepts: those NumPy would see for the reference's records.
pub trait QuantileValue: Copy + sealed::Sealed {
    /// The value widened exactly.
    fn to_f64(self) -> f64;
    /// `hi − lo` computed in the value's own precision, as NumPy does before interpolating.
    fn difference(hi: Self, lo: Self) -> f64;
}

impl QuantileValue for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn difference(hi: Self, lo: Self) -> f64 {
        f64::from(hi - lo)
    }
}

impl QuantileValue for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn difference(hi: Self, lo: Self) -> f64 {
        hi - lo
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// `numpy.quantile(values, q)` with the default `'linear'` method, bit for bit as NumPy 1.25
/// computes it (see the crate docs). Any NaN makes the result NaN, as in NumPy.
pub fn numpy_quantile<T: QuantileValue>(values: &[T], q: f64) -> Result<f64> {
    if values.is_empty() {
        return Err(invalid("quantile values", "there are none"));
    }
    check_fraction("quantile q", q)?;
    if values.iter().any(|v| v.to_f64().is_nan()) {
        return Ok(f64::NAN);
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(|a, b| compare(a.to_f64(), b.to_f64()));
    Ok(quantile_of_sorted(&sorted, q))
}

/// Aggregates per-step importances as the reference does at the end of stage 1 (§4.3): only the
/// second half of the steps (`floor(T/2)..T`) counts, and NaN or infinite entries count as 0
/// in the mean rather than being dropped. Each step holds one value per element: one for IR,
/// r for rank importance.
pub fn aggregate_importance<S: AsRef<[f64]>>(per_step: &[S]) -> Result<Vec<f64>> {
    let Some(first) = per_step.first() else {
        return Err(invalid("importance steps", "no training step was recorded"));
    };
    let width = first.as_ref().len();
    if let Some((step, values)) = per_step
        .iter()
        .enumerate()
        .find(|(_, s)| s.as_ref().len() != width)
    {
        return Err(invalid(
            "importance steps",
            format!(
                "step {step} has {} values, step 0 has {width}",
                values.as_ref().len()
            ),
        ));
    }
    let second_half = &per_step[per_step.len() / 2..];
    let mut sums = vec![0.0; width];
    for step in second_half {
        for (sum, &value) in sums.iter_mut().zip(step.as_ref()) {
            if value.is_finite() {
                *sum += value;
            }
        }
    }
    let steps = second_half.len() as f64;
    Ok(sums.into_iter().map(|sum| sum / steps).collect())
}

/// NumPy 1.25's `'linear'` interpolation on already sorted, non-empty values (see the crate
/// docs for why each step is written this way).
pub(crate) fn quantile_of_sorted<T: QuantileValue>(sorted: &[T], q: f64) -> f64 {
    let last = sorted.len() - 1;
    let virtual_index = last as f64 * q;
    // At or past the last element NumPy takes it for both neighbours, with the weight measured
    // from index −1; the formula below then yields that element.
    let (lo, hi, weight) = if virtual_index >= last as f64 {
        (last, last, virtual_index + 1.0)
    } else {
        let floor = virtual_index.floor();
        (floor as usize, floor as usize + 1, virtual_index - floor)
    };
    let (a, b) = (sorted[lo], sorted[hi]);
    let difference = T::difference(b, a);
    // NumPy interpolates from the nearer neighbour, which changes the rounding.
    if weight >= 0.5 {
        b.to_f64() - difference * (1.0 - weight)
    } else {
        a.to_f64() + difference * weight
    }
}

/// Orders values numerically; callers have excluded NaN.
pub(crate) fn compare(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn quantile_matches_numpy_table() {
        #[derive(Deserialize)]
        struct Table {
            numpy: String,
            cases: Vec<Case>,
        }
        #[derive(Deserialize)]
        struct Case {
            dtype: String,
            values: Vec<String>,
            q: Vec<(String, String, usize)>,
        }
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/quantile_cases.json"
        ));
        let table: Table = serde_json::from_str(text).expect("the table parses");
        assert!(table.numpy.starts_with("1.25."), "{}", table.numpy);
        assert!(table.cases.len() >= 60, "only {} cases", table.cases.len());
        let mut checked = 0;
        for (index, case) in table.cases.iter().enumerate() {
            let hex = |h: &String| u64::from_str_radix(h, 16).expect("hex");
            let (f32s, f64s): (Vec<f32>, Vec<f64>) = match case.dtype.as_str() {
                "float32" => (
                    case.values
                        .iter()
                        .map(|h| f32::from_bits(hex(h) as u32))
                        .collect(),
                    Vec::new(),
                ),
                "float64" => (
                    Vec::new(),
                    case.values.iter().map(|h| f64::from_bits(hex(h))).collect(),
                ),
                other => panic!("case {index}: dtype {other}"),
            };
            for (q, tau, kept) in &case.q {
                let q: f64 = q.parse().expect("q parses");
                let expected = f64::from_bits(hex(tau));
                let (got, got_kept) = if f32s.is_empty() {
                    let t = numpy_quantile(&f64s, q).unwrap();
                    (t, f64s.iter().filter(|&&v| v > t).count())
                } else {
                    let t = numpy_quantile(&f32s, q).unwrap();
                    (t, f32s.iter().filter(|&&v| f64::from(v) > t).count())
                };
                let n = case.values.len();
                assert_eq!(
                    got.to_bits(),
                    expected.to_bits(),
                    "case {index} ({}, n={n}), q={q}: {got:e} != numpy {expected:e}",
                    case.dtype
                );
                assert_eq!(got_kept, *kept, "case {index} (n={n}), q={q}: kept");
                checked += 1;
            }
        }
        assert!(checked >= 500, "only {checked} quantiles checked");
    }

    #[test]
    fn quantile_edge_cases_follow_numpy() {
        assert!(numpy_quantile::<f32>(&[], 0.5).is_err());
        assert!(numpy_quantile(&[1.0f64], -0.1).is_err());
        assert!(numpy_quantile(&[1.0f64], 1.1).is_err());
        assert!(numpy_quantile(&[1.0f64], f64::NAN).is_err());
        assert!(
            numpy_quantile(&[1.0f32, f32::NAN, 3.0], 0.0)
                .unwrap()
                .is_nan()
        );
        assert_eq!(numpy_quantile(&[7.0f32], 0.3).unwrap(), 7.0);
        assert_eq!(numpy_quantile(&[1.0f64, 2.0, 3.0, 4.0], 0.5).unwrap(), 2.5);
        // Infinities go through NumPy's arithmetic unchanged (checked against NumPy 1.25).
        let inf = f32::INFINITY;
        assert!(numpy_quantile(&[1.0, inf], 1.0).unwrap().is_nan());
        assert!(numpy_quantile(&[1.0, inf], 0.5).unwrap().is_nan());
        assert_eq!(numpy_quantile(&[1.0, inf], 0.2).unwrap(), f64::INFINITY);
        assert!(numpy_quantile(&[-inf, 1.0], 0.0).unwrap().is_nan());
    }

    #[test]
    fn aggregation_uses_the_second_half_and_zeroes_non_finite_values() {
        let steps = vec![
            vec![100.0, 100.0],
            vec![100.0, 100.0],
            vec![1.0, f64::NAN],
            vec![2.0, 4.0],
            vec![3.0, f64::INFINITY],
        ];
        // floor(5 / 2) = 2: steps 2, 3, 4; the non-finite entries count as zeros.
        assert_eq!(aggregate_importance(&steps).unwrap(), vec![2.0, 4.0 / 3.0]);
        assert_eq!(aggregate_importance(&[[5.0]]).unwrap(), vec![5.0]);
        assert!(aggregate_importance::<Vec<f64>>(&[]).is_err());
        let ragged = vec![vec![1.0, 2.0], vec![1.0]];
        let text = aggregate_importance(&ragged).unwrap_err().to_string();
        assert!(text.contains("step 1"), "{text}");
    }
}
