//! What the console's system page shows besides the queue: which scheduler leads, and how late
//! recent schedule fires woke their agents.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// The scheduler that last took the lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerLeader {
    /// The fencing epoch: increases each time another scheduler takes the lead.
    pub epoch: i64,
    /// The leading scheduler's id (`NEXUS_SCHEDULER_ID` or its host name); `null` before any
    /// scheduler has led.
    pub leader_id: Option<String>,
    /// When it took the lead.
    pub since: DateTime<Utc>,
}

/// The schedule fires of one interval: how many, and the lateness of a sample of them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FireLateness {
    /// On-time schedule fires (caught-up ones excluded) whose instant falls in the interval.
    pub fires: i64,
    /// Seconds from each sampled fire's instant to the creation of its heartbeat run, for the
    /// first fires of the interval (by instant) that woke an agent.
    pub lateness: Vec<f64>,
}

/// The `q` quantile (0–1) of `values` by the nearest-rank rule; `None` when empty.
#[must_use]
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(quantile(&values, 0.5), Some(50.0));
        assert_eq!(quantile(&values, 0.99), Some(99.0));
        assert_eq!(quantile(&values, 1.0), Some(100.0));
        assert_eq!(quantile(&[3.0], 0.99), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
