//! Pods → the backend-neutral [`ObservedAttempt`]: one pod, or the worker pods of an attempt
//! reduced to one state. Pure: tested in `tests.rs`.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::{
    CONTAINER, DISRUPTION_TARGET, KUEUE_ADMISSION_GATE, KUEUE_QUEUE_LABEL,
    KUEUE_TERMINATION_TARGET, SIGTERM_EXIT,
};
use crate::backend::{AttemptState, ObservedAttempt, Waiting};

/// Pod-level `status.reason`s that mean the platform, not the trainer, ended the pod.
const DISRUPTION_REASONS: &[&str] = &[
    "Evicted",
    "Preempted",
    "Preempting",
    "NodeLost",
    "Shutdown",
    "NodeShutdown",
    "Terminated",
    "UnexpectedAdmissionError",
    "NodeAffinity",
];

/// How the kubelet words an eviction for node pressure, the one eviction that is the node's
/// doing when a kubelet sets no `DisruptionTarget` condition.
const NODE_PRESSURE: &str = "The node was low on resource";

/// Container waiting reasons that are a normal step of starting, not something to report.
const NORMAL_WAITING: &[&str] = &["ContainerCreating", "PodInitializing"];

/// Reason of a worker that stopped on SIGTERM without the platform saying why (deleted by a
/// person, or by the operator ending the attempt).
const SIGTERM_REASON: &str = "Terminated";
/// Reason of a worker pod that is gone while its attempt was live.
pub const GONE_REASON: &str = "PodDeleted";

/// One pod as the state of its attempt, with when its trainer finished (for ordering workers).
struct Worker {
    state: AttemptState,
    /// The pod's containers may still run (its phase is not Succeeded or Failed).
    alive: bool,
    /// The pod's phase is Running.
    running: bool,
    /// Teardown began: deletion requested, or the platform marked it for disruption.
    terminating: bool,
    finished_at: Option<String>,
    /// How much a terminal state explains the attempt's end, for choosing among workers: a
    /// platform disruption (the others' failures follow from it) over a trainer failure over a
    /// plain SIGTERM or a vanished pod (what ending the attempt does to the others).
    weight: u8,
    waiting: Option<Waiting>,
}

/// Why a pending pod is not running, when it is something to report: the scheduler's
/// `PodScheduled=False` (e.g. `Unschedulable` with its message), else the trainer
/// container's waiting reason (`ImagePullBackOff`, `ErrImagePull`,
/// `CreateContainerConfigError`, …), but not the normal `ContainerCreating`.
fn waiting(pod: &Pod) -> Option<Waiting> {
    let gated = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.name == KUEUE_ADMISSION_GATE));
    if gated {
        let queue = pod
            .labels()
            .get(KUEUE_QUEUE_LABEL)
            .cloned()
            .unwrap_or_default();
        return Some(Waiting {
            reason: crate::decide::QUEUED.into(),
            message: format!("waiting for Kueue to admit it (queue {queue})"),
        });
    }
    let status = pod.status.as_ref()?;
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return Some(Waiting {
            reason: c.reason.clone().unwrap_or_else(|| "Unschedulable".into()),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    let w = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?;
    let reason = w
        .reason
        .clone()
        .filter(|r| !NORMAL_WAITING.contains(&r.as_str()))?;
    Some(Waiting {
        reason,
        message: w.message.clone().unwrap_or_default(),
    })
}

fn worker(pod: &Pod) -> Worker {
    let status = pod.status.clone().unwrap_or_default();
    let disruption = status.conditions.iter().flatten().find(|c| {
        (c.type_ == DISRUPTION_TARGET || c.type_ == KUEUE_TERMINATION_TARGET) && c.status == "True"
    });
    let trainer = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER);
    let terminated = trainer.and_then(|c| {
        c.state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.clone()))
    });
    let finished_at = terminated
        .as_ref()
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| t.0.to_string());
    let pod_reason = status.reason.clone().unwrap_or_default();
    let pod_message = status.message.clone().unwrap_or_default();
    let platform = |c: &k8s_openapi::api::core::v1::PodCondition| AttemptState::Disrupted {
        reason: c.reason.clone().unwrap_or_else(|| DISRUPTION_TARGET.into()),
        message: c.message.clone().unwrap_or_default(),
    };
    let phase = status.phase.as_deref();
    let alive = !matches!(phase, Some("Succeeded" | "Failed"));

    // Marked for disruption (a lost node, a preemption): the attempt ends now, whatever the
    // pod's phase, while its trainer may still checkpoint.
    let marked = disruption.filter(|_| alive).map(|c| (platform(c), 3));
    let (state, weight) = marked.unwrap_or_else(|| match phase {
        Some("Running") => (AttemptState::Running, 0),
        Some("Succeeded") => (AttemptState::Succeeded, 0),
        Some("Failed") => {
            let sigterm = terminated
                .as_ref()
                .is_some_and(|t| t.exit_code == SIGTERM_EXIT);
            if let Some(c) = disruption {
                (platform(c), 3)
            } else if pod_reason == "Evicted" && !pod_message.starts_with(NODE_PRESSURE) {
                // Evicted without DisruptionTarget: the pod outgrew its own limits.
                (
                    AttemptState::Failed {
                        reason: pod_reason,
                        message: outgrown(&pod_message),
                    },
                    2,
                )
            } else if DISRUPTION_REASONS.contains(&pod_reason.as_str())
                || pod_reason.starts_with("OutOf")
            {
                (
                    AttemptState::Disrupted {
                        reason: pod_reason,
                        message: pod_message,
                    },
                    3,
                )
            } else if sigterm {
                (
                    AttemptState::Disrupted {
                        reason: SIGTERM_REASON.into(),
                        message: "the trainer stopped on SIGTERM (exit code 143)".into(),
                    },
                    1,
                )
            } else {
                let state = match terminated {
                    Some(t) if t.exit_code == i32::from(mtl_crds::EXIT_INVALID_INPUT) => {
                        let message = t.message.as_deref().map(str::trim).unwrap_or_default();
                        AttemptState::InvalidInput {
                            message: if message.is_empty() {
                                pod_message
                            } else {
                                message.to_string()
                            },
                        }
                    }
                    Some(t) => {
                        let reason = t.reason.clone().unwrap_or_else(|| "Error".into());
                        let message = t.message.as_deref().map(str::trim).unwrap_or_default();
                        AttemptState::Failed {
                            reason: format!("{reason}, exit code {}", t.exit_code),
                            message: if message.is_empty() {
                                pod_message
                            } else {
                                message.to_string()
                            },
                        }
                    }
                    None => AttemptState::Failed {
                        reason: if pod_reason.is_empty() {
                            "Failed".into()
                        } else {
                            pod_reason
                        },
                        message: pod_message,
                    },
                };
                (state, 2)
            }
        }
        // Pending, Unknown (node unreachable) or not yet reported.
        _ => (AttemptState::Pending, 0),
    });
    let terminating = pod.metadata.deletion_timestamp.is_some() || disruption.is_some();
    Worker {
        terminating: terminating && alive,
        alive,
        running: phase == Some("Running"),
        waiting: (state == AttemptState::Pending)
            .then(|| waiting(pod))
            .flatten(),
        state,
        finished_at,
        weight,
    }
}

/// The kubelet's words for a pod evicted for outgrowing its own storage, with the field of
/// the job that raises the limit.
fn outgrown(message: &str) -> String {
    let message = message.trim();
    let field = if message.contains("\"dshm\"") {
        "spec.resources.shmSize"
    } else {
        // The scratch emptyDir, or the pod's ephemeral storage (which scratchSize requests).
        "spec.resources.scratchSize"
    };
    format!("{message} Raise {field}.")
}

/// Reduces one pod (the only worker of its attempt) to an [`ObservedAttempt`].
pub fn observe_pod(pod: &Pod, attempt: u32) -> ObservedAttempt {
    let w = worker(pod);
    ObservedAttempt {
        attempt,
        name: pod.name_any(),
        running: u32::from(w.running),
        unstopped: u32::from(w.alive && !w.terminating),
        terminating: w.terminating,
        workers: 1,
        waiting: w.waiting,
        state: w.state,
    }
}

/// Reduces the worker pods of one attempt (`pods[i]` is worker i's pod, `None` when it does
/// not exist) to one [`ObservedAttempt`]; `None` when none of them exists.
///
/// Rank 0 writes the checkpoints, so the attempt succeeded when worker 0 did. It ended
/// otherwise as soon as one worker ended otherwise (the attempt is all-or-nothing): a
/// platform disruption of any worker wins over a trainer failure (a lost peer makes the others
/// fail too), a failure wins over a plain SIGTERM or a vanished pod, and among equals the
/// worker that finished first. While other workers of an ended attempt are still up, the
/// attempt is `terminating`, so the next one starts only when they are gone.
pub fn observe_workers(pods: &[(String, Option<Pod>)], attempt: u32) -> Option<ObservedAttempt> {
    if pods.iter().all(|(_, p)| p.is_none()) {
        return None;
    }
    let workers: Vec<Worker> = pods
        .iter()
        .map(|(name, pod)| match pod {
            Some(p) => worker(p),
            None => Worker {
                state: AttemptState::Disrupted {
                    reason: GONE_REASON.into(),
                    message: format!("worker pod {name} is gone"),
                },
                alive: false,
                running: false,
                terminating: false,
                finished_at: None,
                weight: 1,
                waiting: None,
            },
        })
        .collect();
    let up = |w: &Worker| w.alive;
    let running = workers.iter().filter(|w| w.running).count() as u32;
    let unstopped = workers.iter().filter(|w| up(w) && !w.terminating).count() as u32;
    let any_up = workers.iter().any(up);
    let name = pods[0].0.clone();

    let ended = workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.state.is_terminal() && w.state != AttemptState::Succeeded)
        .max_by(|(i, a), (j, b)| {
            a.weight
                .cmp(&b.weight)
                // Earlier finish first; a worker without a finish time after those with one.
                .then_with(|| match (&a.finished_at, &b.finished_at) {
                    (Some(x), Some(y)) => y.cmp(x),
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (None, None) => std::cmp::Ordering::Equal,
                })
                .then_with(|| j.cmp(i))
        })
        .map(|(_, w)| w);

    let (state, terminating) = if workers[0].state == AttemptState::Succeeded {
        (AttemptState::Succeeded, false)
    } else if let Some(w) = ended {
        (w.state.clone(), any_up)
    } else if workers
        .iter()
        .all(|w| matches!(w.state, AttemptState::Running | AttemptState::Succeeded))
    {
        (AttemptState::Running, workers.iter().any(|w| w.terminating))
    } else {
        (AttemptState::Pending, workers.iter().any(|w| w.terminating))
    };
    // The first worker stuck, named, while the attempt waits.
    let waiting = (state == AttemptState::Pending)
        .then(|| {
            pods.iter().zip(&workers).find_map(|((name, _), w)| {
                w.waiting.as_ref().map(|x| Waiting {
                    reason: x.reason.clone(),
                    message: format!("worker pod {name}: {}", x.message),
                })
            })
        })
        .flatten();
    Some(ObservedAttempt {
        attempt,
        name,
        state,
        terminating,
        workers: pods.len() as u32,
        running,
        unstopped,
        waiting,
    })
}
