//! Small statistics for the reports.

use std::time::Duration;

/// The `q` quantile (0.0 to 1.0) of `values`, nearest rank; zero for no values.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The median of `values`; zero for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Standard deviation divided by the mean (0 for fewer than two values).
pub fn coefficient_of_variation(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    if mean == 0.0 { 0.0 } else { var.sqrt() / mean }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let ms = |n| Duration::from_millis(n);
        let v = [ms(5), ms(1), ms(3), ms(2), ms(4)];
        assert_eq!(quantile(&v, 0.5), ms(3));
        assert_eq!(quantile(&v, 1.0), ms(5));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(coefficient_of_variation(&[2.0, 2.0]), 0.0);
    }
}
