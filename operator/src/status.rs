//! Helpers over `.status`: conditions with Kubernetes semantics, times, and the checkpoint
//! manifest folded into status.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use mtl_crds::{Condition, MultiTaskTrainingJobStatus};
use mtl_storage::Manifest;

/// Condition types the operator maintains.
pub mod cond {
    pub const CREATED: &str = "Created";
    pub const RUNNING: &str = "Running";
    pub const RESTARTING: &str = "Restarting";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const SUSPENDED: &str = "Suspended";
    /// False while the checkpoint manifest cannot be read or parsed.
    pub const CHECKPOINTS_READABLE: &str = "CheckpointsReadable";
    /// True while an attempt runs but the trainer's progress object has not changed for
    /// [`crate::progress::STALE_INTERVALS`] of its intervals.
    pub const STALLED: &str = "Stalled";
    /// False while the operator's calls for this job fail (a pod create refused by a
    /// ResourceQuota, a Vertex AI 403), with the API's words; True again once they work.
    pub const SYNCED: &str = "Synced";
}

/// At most this many checkpoints are mirrored into status (the newest); keeps the object small.
pub const MAX_STATUS_CHECKPOINTS: usize = 50;

/// RFC 3339 with second precision, as Kubernetes writes times.
pub fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `t` plus `secs` seconds (negative counts as zero), saturating at the end of time.
pub fn add_seconds(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(secs.max(0)))
        .unwrap_or(Timestamp::MAX)
}

/// `t` + `d` (millisecond precision).
pub fn add_millis(t: Timestamp, d: std::time::Duration) -> Timestamp {
    t.checked_add(SignedDuration::from_millis(d.as_millis() as i64))
        .unwrap_or(t)
}

/// Parses an RFC 3339 time from status; `None` when absent or unreadable.
pub fn parse_time(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

pub fn find<'a>(status: &'a MultiTaskTrainingJobStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// True when condition `type_` is present with status "True".
pub fn is_true(status: &MultiTaskTrainingJobStatus, type_: &str) -> bool {
    find(status, type_).is_some_and(|c| c.status == "True")
}

/// Sets condition `type_`. `lastTransitionTime` moves only when the status flips (or the
/// condition is new); reason and message are always updated. Returns true on a flip.
pub fn set(
    status: &mut MultiTaskTrainingJobStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) -> bool {
    let value_str = if value { "True" } else { "False" };
    let message = message.into();
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let flipped = c.status != value_str;
            if flipped {
                c.status = value_str.into();
                c.last_transition_time = format_time(now);
            }
            c.reason = reason.into();
            c.message = message;
            flipped
        }
        None => {
            status.conditions.push(Condition {
                type_: type_.into(),
                status: value_str.into(),
                reason: reason.into(),
                message,
                last_transition_time: format_time(now),
            });
            true
        }
    }
}

/// Sets condition `type_` to False only if it is present (a condition that never applied is not
/// added just to say it does not).
pub fn clear(
    status: &mut MultiTaskTrainingJobStatus,
    type_: &str,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) -> bool {
    if find(status, type_).is_some() {
        set(status, type_, false, reason, message, now)
    } else {
        false
    }
}

/// Copies the manifest's checkpoints into status. Returns the newest step when it changed.
pub fn apply_manifest(status: &mut MultiTaskTrainingJobStatus, manifest: &Manifest) -> Option<u64> {
    let previous = status.step;
    let all = &manifest.checkpoints;
    let start = all.len().saturating_sub(MAX_STATUS_CHECKPOINTS);
    status.checkpoints = all[start..].to_vec();
    status.best_checkpoint = manifest.best.clone();
    if manifest.model.is_some() {
        status.model = manifest.model.clone();
    }
    match manifest.latest() {
        Some(latest) => {
            status.step = Some(latest.step);
            status.latest_checkpoint = Some(latest.uri.clone());
            status.metrics = latest.metrics.clone();
            (previous != Some(latest.step)).then_some(latest.step)
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mtl_crds::CheckpointRef;

    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut st = MultiTaskTrainingJobStatus::default();
        assert!(set(
            &mut st,
            cond::RUNNING,
            true,
            "PodRunning",
            "a",
            t("2026-01-01T00:00:00Z")
        ));
        assert!(!set(
            &mut st,
            cond::RUNNING,
            true,
            "PodRunning",
            "b",
            t("2026-01-01T00:01:00Z")
        ));
        let c = find(&st, cond::RUNNING).unwrap();
        assert_eq!(c.last_transition_time, "2026-01-01T00:00:00Z");
        assert_eq!(c.message, "b");
        assert!(set(
            &mut st,
            cond::RUNNING,
            false,
            "PodFailed",
            "c",
            t("2026-01-01T00:02:00Z")
        ));
        let c = find(&st, cond::RUNNING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.as_str()),
            ("False", "2026-01-01T00:02:00Z")
        );
    }

    #[test]
    fn clear_does_not_add_absent_conditions() {
        let mut st = MultiTaskTrainingJobStatus::default();
        assert!(!clear(
            &mut st,
            cond::SUSPENDED,
            "Resumed",
            "",
            t("2026-01-01T00:00:00Z")
        ));
        assert!(st.conditions.is_empty());
    }

    #[test]
    fn time_round_trip_drops_subseconds() {
        let ts = t("2026-03-04T05:06:07.891Z");
        assert_eq!(format_time(ts), "2026-03-04T05:06:07Z");
        assert_eq!(
            parse_time(Some("2026-03-04T05:06:07Z")),
            Some(t("2026-03-04T05:06:07Z"))
        );
        assert_eq!(parse_time(Some("yesterday")), None);
    }

    #[test]
    fn manifest_fills_latest_and_caps_history() {
        let mut st = MultiTaskTrainingJobStatus::default();
        let checkpoints = (1..=60)
            .map(|i| CheckpointRef {
                step: i * 10,
                uri: format!("gs://b/out/checkpoint-{}", i * 10),
                time: "2026-01-01T00:00:00Z".into(),
                metrics: BTreeMap::from([("mean".to_string(), i as f64)]),
            })
            .collect();
        let m = Manifest {
            checkpoints,
            ..Manifest::default()
        };
        assert_eq!(apply_manifest(&mut st, &m), Some(600));
        assert_eq!(st.checkpoints.len(), MAX_STATUS_CHECKPOINTS);
        assert_eq!(st.checkpoints[0].step, 110);
        assert_eq!(
            st.latest_checkpoint.as_deref(),
            Some("gs://b/out/checkpoint-600")
        );
        assert_eq!(st.metrics["mean"], 60.0);
        assert_eq!(
            apply_manifest(&mut st, &m),
            None,
            "unchanged step reports no news"
        );
    }
}
