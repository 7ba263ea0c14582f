//! Measurement helpers for the system benchmark: repeated runs summarized
//! by their median and spread, and the report rows they become.

use std::time::Duration;

use serde_json::{Value, json};

/// Repeated measurements of one quantity.
#[derive(Debug, Clone)]
pub struct Samples {
    /// The values, in the order measured.
    pub values: Vec<f64>,
}

impl Samples {
    /// Samples from values.
    pub fn new(values: Vec<f64>) -> Samples {
        assert!(!values.is_empty(), "a measurement needs at least one run");
        Samples { values }
    }

    /// Runs `f` `runs` times and collects its values.
    pub fn collect(runs: usize, mut f: impl FnMut() -> f64) -> Samples {
        Samples::new((0..runs).map(|_| f()).collect())
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median.
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        let n = v.len();
        if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
    }

    /// The smallest value.
    pub fn min(&self) -> f64 {
        self.sorted()[0]
    }

    /// The largest value.
    pub fn max(&self) -> f64 {
        *self.sorted().last().expect("not empty")
    }
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// Section: `boot`, `throughput`, ...
    pub group: String,
    /// What was measured.
    pub metric: String,
    /// Its unit.
    pub unit: String,
    /// picosandbox's measurements.
    pub ours: Samples,
    /// The baseline measured alongside, if any: its name and samples.
    pub baseline: Option<(String, Samples)>,
    /// How the two compare, as text (e.g. `"0.62x"` or `"+3.1 ms"`).
    pub comparison: Option<String>,
    /// The target, as text, and whether it was met.
    pub target: Option<(String, bool)>,
}

impl Row {
    /// A row without a baseline.
    pub fn plain(group: &str, metric: &str, unit: &str, ours: Samples) -> Row {
        Row {
            group: group.into(),
            metric: metric.into(),
            unit: unit.into(),
            ours,
            baseline: None,
            comparison: None,
            target: None,
        }
    }

    /// Adds a baseline and the ratio ours / baseline.
    pub fn against(mut self, name: &str, baseline: Samples) -> Row {
        let ratio = self.ours.median() / baseline.median();
        self.comparison = Some(format!("{ratio:.2}x"));
        self.baseline = Some((name.into(), baseline));
        self
    }

    /// Sets the comparison text.
    pub fn compared(mut self, text: String) -> Row {
        self.comparison = Some(text);
        self
    }

    /// Adds a target and whether it was met.
    pub fn target(mut self, text: &str, met: bool) -> Row {
        self.target = Some((text.into(), met));
        self
    }

    /// The row as JSON.
    pub fn json(&self) -> Value {
        let summary = |s: &Samples| json!({ "median": s.median(), "min": s.min(), "max": s.max(), "runs": s.values });
        json!({
            "group": self.group,
            "metric": self.metric,
            "unit": self.unit,
            "ours": summary(&self.ours),
            "baseline": self.baseline.as_ref().map(|(name, s)| json!({ "name": name, "value": summary(s) })),
            "comparison": self.comparison,
            "target": self.target.as_ref().map(|(t, met)| json!({ "text": t, "met": met })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let s = Samples::new(vec![3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median(), s.min(), s.max()), (2.5, 1.0, 10.0));
        let row = Row::plain("g", "m", "MB/s", Samples::new(vec![50.0])).against("floor", Samples::new(vec![100.0]));
        assert_eq!(row.comparison.as_deref(), Some("0.50x"));
        assert_eq!(row.json()["baseline"]["value"]["median"], 100.0);
        assert_eq!(mb_per_s(2_000_000, Duration::from_secs(2)), 1.0);
    }
}
