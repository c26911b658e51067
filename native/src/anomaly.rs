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

/// Python's ``math.fsum``: the correctly rounded sum (Shewchuk's partials).
pub fn fsum(values: impl Iterator<Item = f64>) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for mut x in values {
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
        partials.push(x);
    }
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

/// Robust z-score of ``x`` against ``history`` (capped at +-MAX_Z).
pub fn robust_z(history: &[f64], x: f64) -> f64 {
    let m = median(history);
    let deviations: Vec<f64> = history.iter().map(|v| (v - m).abs()).collect();
    let mut mad = median(&deviations) * MAD_TO_SIGMA;
    if mad == 0.0 {
        mad = fsum(deviations.iter().copied()) / deviations.len() as f64 * 1.2533;
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
}
