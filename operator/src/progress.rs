//! The trainer's progress object folded into `.status.progress`, and the `Stalled` rule: pure,
//! tested below. The controller reads `progress.json` at most every `--progress-poll-seconds`
//! per job (never because of its own status write) and remembers when it last saw the object
//! change, by its own clock: the trainer's clock is not compared with the operator's.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use mtl_crds::{JobProgress, MultiTaskTrainingJobStatus};
use mtl_storage::Progress;

use crate::status::{self, cond};

/// A progress object not updated for this many of its intervals while the attempt runs is
/// stale: the job is `Stalled`.
pub const STALE_INTERVALS: u64 = 10;

/// `.status.progress` from a progress object read at `now`.
pub fn to_status(p: &Progress, now: Timestamp) -> JobProgress {
    let percent = (p.step.min(p.total_steps) * 100)
        .checked_div(p.total_steps)
        .unwrap_or(0);
    let eta = p.eta_seconds.filter(|s| s.is_finite() && *s >= 0.0);
    JobProgress {
        step: p.step,
        total_steps: p.total_steps,
        percent: format!("{percent}%"),
        examples_per_second: Some(round(p.examples_per_second, 2)),
        loss: p.loss.map(|l| round(l, 4)),
        estimated_completion_time: eta
            .map(|s| status::format_time(status::add_seconds(now, s.round() as i64))),
        eta: eta.map(|s| human(s.round() as u64)),
        updated_at: p.updated_at.clone(),
    }
}

/// Whether a fresh reading `fresh` replaces the progress `shown` in status: when there is none
/// yet, when the whole percent moved, or when `since_written` (since `shown` was written, as
/// the operator remembers it; unknown after a restart) reached `min_interval`. Step, loss,
/// throughput and ETA change on every read of a running trainer's progress; writing each would
/// cost a status write per job every `--progress-poll-seconds`.
pub fn should_write(
    shown: Option<&JobProgress>,
    fresh: &JobProgress,
    since_written: Option<std::time::Duration>,
    min_interval: std::time::Duration,
) -> bool {
    match (shown, since_written) {
        (None, _) | (Some(_), None) => true,
        (Some(old), Some(age)) => {
            old.percent != fresh.percent
                || old.total_steps != fresh.total_steps
                || age >= min_interval
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// `42s`, `12m`, `3h20m`, `2d4h`: as kubectl prints ages.
pub fn human(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

/// When the progress object last changed, on the first read after the operator lost its
/// memory of it (a restart): the report the status already shows was written at its
/// `updatedAt` (the trainer's clock, never later than `now`), so a job stalled before the
/// restart stays stalled; a new report changed now.
pub fn changed_at_after_restart(
    shown: Option<&JobProgress>,
    updated_at: &str,
    now: Timestamp,
) -> Timestamp {
    match shown {
        Some(p) if p.updated_at == updated_at => {
            status::parse_time(Some(updated_at)).map_or(now, |t| t.min(now))
        }
        _ => now,
    }
}

/// Sets or clears `Stalled`: true while the attempt runs and the progress object has not
/// changed for [`STALE_INTERVALS`] × `interval_secs` (counted from when the operator last saw
/// it change, or from when the attempt started running if it never did). Returns true when the
/// condition flipped.
pub fn fold_stalled(
    st: &mut MultiTaskTrainingJobStatus,
    running: bool,
    unchanged_since: Option<Timestamp>,
    interval_secs: u64,
    now: Timestamp,
) -> bool {
    let limit = SignedDuration::from_secs((STALE_INTERVALS * interval_secs.max(1)) as i64);
    let age = unchanged_since.map(|t| t.duration_until(now));
    match age {
        Some(age) if running && age >= limit => {
            let secs = age.as_secs().max(0) as u64;
            status::set(
                st,
                cond::STALLED,
                true,
                "ProgressStale",
                format!(
                    "the trainer's progress has not changed for {} ({} times progressEverySeconds={interval_secs})",
                    human(secs),
                    STALE_INTERVALS
                ),
                now,
            )
        }
        _ if status::find(st, cond::STALLED).is_some_and(|c| c.status == "True") => status::set(
            st,
            cond::STALLED,
            false,
            if running {
                "ProgressResumed"
            } else {
                "NotRunning"
            },
            "",
            now,
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    /// A running trainer read every 30 s for an hour, a step a second of 20,000: status
    /// takes its progress on each whole percent or every 120 s, not on every read.
    #[test]
    fn progress_is_written_on_each_percent_or_every_interval() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let mut shown: Option<JobProgress> = None;
        let mut written_at: Option<u64> = None;
        let (mut reads, mut writes) = (0, 0);
        for secs in (0..3600u64).step_by(30) {
            let p = Progress {
                step: secs,
                total_steps: 20_000,
                eta_seconds: Some((20_000 - secs) as f64),
                updated_at: format!("t{secs}"),
                ..Default::default()
            };
            let now = status::add_seconds(t0, secs as i64);
            let fresh = to_status(&p, now);
            reads += 1;
            let since = written_at.map(|w| Duration::from_secs(secs - w));
            if should_write(shown.as_ref(), &fresh, since, Duration::from_secs(120)) {
                writes += 1;
                shown = Some(fresh);
                written_at = Some(secs);
            }
        }
        assert_eq!(reads, 120);
        // 3600 s at 120 s apart (percent moves every 200 s, at most once between two).
        assert!((30..=45).contains(&writes), "{writes} writes");
        // A restart (nothing remembered) writes once; a new total writes at once.
        let fresh = to_status(
            &Progress {
                step: 1,
                total_steps: 10,
                ..Default::default()
            },
            t0,
        );
        assert!(should_write(
            Some(&fresh),
            &fresh,
            None,
            Duration::from_secs(120)
        ));
        let other = to_status(
            &Progress {
                step: 1,
                total_steps: 11,
                ..Default::default()
            },
            t0,
        );
        assert!(should_write(
            Some(&fresh),
            &other,
            Some(Duration::ZERO),
            Duration::from_secs(120)
        ));
        assert!(!should_write(
            Some(&fresh),
            &fresh,
            Some(Duration::from_secs(119)),
            Duration::from_secs(120)
        ));
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn progress(step: u64, eta: Option<f64>) -> Progress {
        Progress {
            step,
            total_steps: 400,
            epoch: 0.5,
            loss: Some(0.123456),
            task_losses: BTreeMap::new(),
            learning_rate: 1e-5,
            examples_per_second: 12.3456,
            tokens_per_second: 800.0,
            eta_seconds: eta,
            eval: BTreeMap::new(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            attempt: Some(1),
        }
    }

    #[test]
    fn status_shows_percent_eta_and_rounded_rates() {
        let now = t("2026-01-01T00:00:10Z");
        let s = to_status(&progress(168, Some(750.4)), now);
        assert_eq!(s.percent, "42%");
        assert_eq!((s.step, s.total_steps), (168, 400));
        assert_eq!(s.eta.as_deref(), Some("12m"));
        assert_eq!(
            s.estimated_completion_time.as_deref(),
            Some("2026-01-01T00:12:40Z")
        );
        assert_eq!(s.examples_per_second, Some(12.35));
        assert_eq!(s.loss, Some(0.1235));
        assert_eq!(s.updated_at, "2026-01-01T00:00:00Z");
        // Before the first step, past the end, nonsense ETAs.
        let s = to_status(&progress(0, None), now);
        assert_eq!((s.percent.as_str(), s.eta), ("0%", None));
        assert_eq!(to_status(&progress(500, Some(-1.0)), now).percent, "100%");
        assert_eq!(to_status(&progress(1, Some(f64::NAN)), now).eta, None);
        let mut zero = progress(0, None);
        zero.total_steps = 0;
        assert_eq!(to_status(&zero, now).percent, "0%");
    }

    #[test]
    fn human_durations_read_like_kubectl_ages() {
        let rows = [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (3599, "59m"),
            (3600, "1h"),
            (12_000, "3h20m"),
            (86_400, "1d"),
            (86_400 + 3 * 60, "1d"),
            (2 * 86_400 + 4 * 3600, "2d4h"),
        ];
        for (secs, want) in rows {
            assert_eq!(human(secs), want, "{secs}");
        }
    }

    #[test]
    fn a_restart_keeps_a_stalled_job_stalled() {
        let now = t("2026-01-01T01:00:00Z");
        let shown = JobProgress {
            updated_at: "2026-01-01T00:10:00Z".into(),
            ..Default::default()
        };
        // The same report as the status shows: unchanged since it was written.
        assert_eq!(
            changed_at_after_restart(Some(&shown), "2026-01-01T00:10:00Z", now),
            t("2026-01-01T00:10:00Z")
        );
        let mut st = MultiTaskTrainingJobStatus::default();
        let since = changed_at_after_restart(Some(&shown), &shown.updated_at, now);
        fold_stalled(&mut st, true, Some(since), 30, now);
        assert!(status::find(&st, cond::STALLED).is_some_and(|c| c.status == "True"));
        // A newer report, or none shown before: it changed now.
        assert_eq!(
            changed_at_after_restart(Some(&shown), "2026-01-01T00:59:50Z", now),
            now
        );
        assert_eq!(
            changed_at_after_restart(None, "2026-01-01T00:10:00Z", now),
            now
        );
        // A trainer clock ahead of the operator's is not believed past now.
        assert_eq!(
            changed_at_after_restart(
                Some(&JobProgress {
                    updated_at: "2026-01-01T02:00:00Z".into(),
                    ..Default::default()
                }),
                "2026-01-01T02:00:00Z",
                now
            ),
            now
        );
    }

    #[test]
    fn stalled_after_ten_intervals_without_change_while_running() {
        let mut st = MultiTaskTrainingJobStatus::default();
        let since = t("2026-01-01T00:00:00Z");
        // 30 s intervals: 299 s is fine, 300 s is stalled.
        assert!(!fold_stalled(
            &mut st,
            true,
            Some(since),
            30,
            t("2026-01-01T00:04:59Z")
        ));
        assert!(status::find(&st, cond::STALLED).is_none());
        assert!(fold_stalled(
            &mut st,
            true,
            Some(since),
            30,
            t("2026-01-01T00:05:00Z")
        ));
        let c = status::find(&st, cond::STALLED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "ProgressStale")
        );
        assert!(c.message.contains("5m"), "{}", c.message);
        // Still stalled: no flip, the age in the message moves.
        assert!(!fold_stalled(
            &mut st,
            true,
            Some(since),
            30,
            t("2026-01-01T00:08:00Z")
        ));
        assert!(
            status::find(&st, cond::STALLED)
                .unwrap()
                .message
                .contains("8m")
        );
        // It moved again.
        assert!(fold_stalled(
            &mut st,
            true,
            Some(t("2026-01-01T00:08:00Z")),
            30,
            t("2026-01-01T00:08:01Z")
        ));
        let c = status::find(&st, cond::STALLED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "ProgressResumed")
        );
        // Not running: never stalled, however old.
        let mut st = MultiTaskTrainingJobStatus::default();
        assert!(!fold_stalled(
            &mut st,
            false,
            Some(since),
            30,
            t("2026-01-02T00:00:00Z")
        ));
        assert!(status::find(&st, cond::STALLED).is_none());
        // Nothing known yet: not stalled.
        assert!(!fold_stalled(
            &mut st,
            true,
            None,
            30,
            t("2026-01-02T00:00:00Z")
        ));
    }
}
