//! The robust z-score of `ringfence.engine.anomaly`: median and MAD of a key's last values.

pub const MAX_Z: f64 = 99.0;
pub const MAD_TO_SIGMA: f64 = 1.4826;

#[derive(Debug, Clone)]
pub struct ZState {
    pub seen: f64,
    pub values: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(crate::value::float_order);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Folds `x` into Shewchuk's `partials`; returns the new top partial (pushed after them).
fn fold(partials: &mut Vec<f64>, mut x: f64) -> f64 {
    let mut i = 0;
    for j in 0..partials.len() {
        let mut y = partials[j];
        if x.abs() < y.abs() {
            std::mem::swap(&mut x, &mut y);
        }
        let hi = x + y;
        let lo = y - (hi - x);
        if lo != 0.0 {
            partials[i] = lo;
            i += 1;
        }
        x = hi;
    }
    partials.truncate(i);
    x
}

/// The correctly rounded sum of Shewchuk's `partials`.
fn rounded(partials: &[f64]) -> f64 {
    let mut n = partials.len();
    let mut hi = 0.0;
    let mut lo = 0.0;
    if n > 0 {
        n -= 1;
        hi = partials[n];
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = partials[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
    }
    hi
}

/// Shewchuk's sum without Python's checks: past the largest float it is what the arithmetic
/// makes of it (the reference engine's `_fsum_unchecked`).
pub fn fsum(values: impl Iterator<Item = f64>) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for x in values {
        let top = fold(&mut partials, x);
        partials.push(top);
    }
    rounded(&partials)
}

/// Python's `math.fsum`, None where it raises OverflowError (finite summands past the largest
/// float). An infinite or NaN summand is summed apart, as Python does: `[0, inf]` sums to inf,
/// where Shewchuk's arithmetic makes NaN of it (`inf - inf`).
pub fn fsum_checked(values: &[f64]) -> Option<f64> {
    let mut partials: Vec<f64> = Vec::new();
    let (mut special, mut infinite) = (0.0_f64, 0.0_f64);
    for &summand in values {
        let x = fold(&mut partials, summand);
        if x.is_finite() {
            if x != 0.0 {
                partials.push(x);
            }
        } else if summand.is_finite() {
            return None; // intermediate overflow
        } else {
            if summand.is_infinite() {
                infinite += summand;
            }
            special += summand;
            partials.clear();
        }
    }
    if special != 0.0 {
        // (Python raises ValueError for -inf + inf: never for a mean of deviations)
        return Some(if infinite.is_nan() { f64::NAN } else { special });
    }
    Some(rounded(&partials))
}

/// Robust z-score of ``x`` against ``history`` (capped at +-MAX_Z).
pub fn robust_z(history: &[f64], x: f64) -> f64 {
    let m = median(history);
    let deviations: Vec<f64> = history.iter().map(|v| (v - m).abs()).collect();
    let mut mad = median(&deviations) * MAD_TO_SIGMA;
    if mad == 0.0 {
        // `statistics.fmean`, or the unchecked sum where it raises OverflowError, as the reference
        let total = fsum_checked(&deviations).unwrap_or_else(|| fsum(deviations.iter().copied()));
        mad = total / deviations.len() as f64 * 1.2533;
    }
    if mad == 0.0 {
        return if x == m {
            0.0
        } else if x > m {
            MAX_Z
        } else {
            -MAX_Z
        };
    }
    let z = (x - m) / mad;
    let capped = if z < MAX_Z { z } else { MAX_Z };
    if capped > -MAX_Z {
        capped
    } else {
        -MAX_Z
    }
}

/// Score ``x`` against the key's history, then remember it.
pub fn score(
    state: &mut ZState,
    x: f64,
    t: f64,
    min_samples: usize,
    samples: usize,
) -> Option<f64> {
    let score = (state.values.len() >= min_samples).then(|| robust_z(&state.values, x));
    crate::features::push_tight(&mut state.values, x);
    if samples > 0 && state.values.len() > samples {
        let extra = state.values.len() - samples;
        state.values.drain(..extra);
    }
    if t > state.seen {
        state.seen = t;
    }
    score
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsum_is_exact() {
        assert_eq!(fsum([0.1; 10].into_iter()), 1.0);
        assert_eq!(fsum([1e100, 1.0, -1e100, 1e-100].into_iter()), 1.0);
    }

    #[test]
    fn fsum_checked_is_pythons_math_fsum() {
        assert_eq!(fsum_checked(&[0.1; 10]), Some(1.0));
        assert_eq!(
            fsum_checked(&[0.0, 0.0, f64::INFINITY, 1.0]),
            Some(f64::INFINITY)
        );
        assert_eq!(fsum_checked(&[-f64::INFINITY, 2.0]), Some(-f64::INFINITY));
        assert!(fsum_checked(&[1.0, f64::NAN]).is_some_and(f64::is_nan));
        assert_eq!(fsum_checked(&[f64::MAX, f64::MAX]), None); // Python: OverflowError
        assert!(fsum([0.0, f64::INFINITY].into_iter()).is_nan()); // the arithmetic's own answer
    }
}
