//! Summaries of timed samples: percentiles by nearest rank, mean, and the
//! least-squares growth of a figure with a size.

use std::time::Duration;

/// The summary of one timed measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub runs: usize,
    pub p50: f64,
    pub p95: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Milliseconds of `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Summary::of_ms(&ms)
    }

    pub fn of_ms(ms: &[f64]) -> Option<Summary> {
        if ms.is_empty() {
            return None;
        }
        let mut sorted = ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            runs: sorted.len(),
            p50: percentile(&sorted, 50.0),
            p95: percentile(&sorted, 95.0),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// The `p`-th percentile of `sorted` (ascending, not empty) by nearest
/// rank: the smallest sample with at least `p`% of the samples at or below
/// it.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The `p`-th percentile (0 to 100, nearest rank) of `samples`, in any
/// order; `Duration::ZERO` for none.
pub fn percentile_of(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The least-squares line through `(x, y)` points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub slope: f64,
    pub intercept: f64,
    /// How much of the variation the line explains (1 = all).
    pub r2: f64,
}

/// The least-squares line through `points`; `None` for fewer than two
/// distinct `x`.
pub fn linear_fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if points.len() < 2 || sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_tot: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    let ss_res: f64 = points
        .iter()
        .map(|p| (p.1 - (slope * p.0 + intercept)).powi(2))
        .sum();
    let r2 = if ss_tot == 0.0 {
        1.0
    } else {
        1.0 - ss_res / ss_tot
    };
    Some(Fit {
        slope,
        intercept,
        r2,
    })
}

/// Milliseconds for a table: two decimals under 10 ms, one under 1 s,
/// none above.
pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 1000.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        let s = Summary::of_ms(&v).unwrap();
        assert_eq!((s.p50, s.p95, s.runs), (25.0, 48.0, 50));
        assert_eq!(s.mean, 25.5);
        assert_eq!(percentile(&[7.0], 95.0), 7.0);
        let d: Vec<Duration> = (1..=50).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile_of(&d, 50.0), Duration::from_millis(25));
        assert_eq!(percentile_of(&d, 95.0), Duration::from_millis(48));
        assert_eq!(percentile_of(&[], 50.0), Duration::ZERO);
        assert_eq!(percentile(&[1.0, 2.0], 50.0), 1.0);
        assert_eq!(percentile(&[1.0, 2.0], 95.0), 2.0);
        assert!(Summary::of_ms(&[]).is_none());
        // Unsorted input.
        let s = Summary::of(&[Duration::from_millis(30), Duration::from_millis(10)]).unwrap();
        assert_eq!((s.min, s.max), (10.0, 30.0));
    }

    #[test]
    fn fit() {
        let f = linear_fit(&[(1.0, 3.0), (3.0, 7.0), (10.0, 21.0)]).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-9, "{f:?}");
        assert!(
            (f.intercept - 1.0).abs() < 1e-9 && (f.r2 - 1.0).abs() < 1e-9,
            "{f:?}"
        );
        let f = linear_fit(&[(1.0, 1.0), (2.0, 3.0), (3.0, 2.0)]).unwrap();
        assert!(f.r2 < 0.5, "{f:?}");
        assert!(linear_fit(&[(1.0, 3.0)]).is_none());
        assert!(linear_fit(&[(1.0, 3.0), (1.0, 4.0)]).is_none());
    }

    #[test]
    fn formatting() {
        assert_eq!(ms(4.567), "4.57 ms");
        assert_eq!(ms(45.67), "45.7 ms");
        assert_eq!(ms(4567.0), "4567 ms");
    }
}
