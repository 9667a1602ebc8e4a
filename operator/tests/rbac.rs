//! The Helm chart's RBAC is derived from what the operator does, not from a list kept by hand:
//! the real `mtl-operator` runs a job through its whole life against kube-standin (several
//! workers and their Service, suspend and resume, success, deletion after its TTL, an older
//! operator's finalizer released, leader election, Events), the stand-in's request log gives
//! every (API group, resource, verb) the operator asked for (its requests carry
//! `User-Agent: mtl-operator/…`), and the chart's Roles must grant exactly those plus what they
//! need implicitly (below), nothing more.

mod common;

use std::collections::BTreeSet;

use common::{Env, NS, kubelet_ok};
use mtl_crds::JobPhase;
use serde_json::json;

type Grant = (String, String, String);

fn grant(group: &str, resource: &str, verb: &str) -> Grant {
    (group.into(), resource.into(), verb.into())
}

/// A request-log resource (`pods`, `multitasktrainingjobs.multitask.dev/status`,
/// `leases.coordination.k8s.io`) as (group, resource with its subresource).
fn split_resource(full: &str) -> (String, String) {
    let (name, sub) = full.split_once('/').unwrap_or((full, ""));
    let (plural, group) = name.split_once('.').unwrap_or((name, ""));
    let resource = if sub.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}/{sub}")
    };
    (group.to_string(), resource)
}

/// What the operator's requests need besides their own verb:
/// - a create of a pod, Service or PodGroup that already exists (a status write lost after an earlier
///   create) is followed by a `get` to check whose it is;
/// - pods and Services carry an owner reference with `blockOwnerDeletion` to their job, which
///   the API server allows only with `update` on the owner's `finalizers` subresource;
/// - the Event recorder patches an Event that repeats (a series) instead of creating another.
fn implied(used: &BTreeSet<Grant>) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for (group, resource, verb) in used {
        match (group.as_str(), resource.as_str(), verb.as_str()) {
            ("", "pods" | "services", "create")
            | ("scheduling.x-k8s.io", "podgroups", "create") => {
                out.insert(grant(group, resource, "get"));
                out.insert(grant(
                    "multitask.dev",
                    "multitasktrainingjobs/finalizers",
                    "update",
                ));
            }
            (_, "events", "create") => {
                out.insert(grant(group, resource, "patch"));
            }
            _ => {}
        }
    }
    out
}

/// The `rules` of every Role and ClusterRole in the chart's templates, as grants. The rules
/// are plain YAML in the templates; lines with template actions (`{{ … }}`, e.g. a
/// `resourceNames` of the release's name) are left out.
fn chart_grants() -> BTreeSet<Grant> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/mtl-operator/templates"
    );
    let mut grants = BTreeSet::new();
    for file in ["clusterrole.yaml", "leader-election-rbac.yaml"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).expect("chart template");
        let mut lines = text.lines().skip_while(|l| l.trim() != "rules:").skip(1);
        let rules: String = lines
            .by_ref()
            .take_while(|l| l.starts_with("  ") || l.contains("{{"))
            .filter(|l| !l.contains("{{"))
            .map(|l| format!("{l}\n"))
            .collect();
        let rules: Vec<serde_yaml::Value> =
            serde_yaml::from_str(&rules).unwrap_or_else(|e| panic!("{file} rules: {e}"));
        for rule in rules {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        grants.insert(grant(&group, &resource, &verb));
                    }
                }
            }
        }
    }
    grants
}

#[tokio::test]
async fn the_charts_rbac_is_exactly_what_the_operator_uses() {
    let mut env = Env::start().await;
    // With every option that needs a grant of its own (coscheduling.enabled: PodGroups).
    env.with_coscheduling().await;
    env.operator("op-a");
    let spec = |suspend: bool| {
        json!({"workers": 2,
               // Whole-second times in status: 3 s leaves at least 2 to see Succeeded.
               "runPolicy": {"suspend": suspend, "ttlSecondsAfterFinished": 3}})
    };
    env.apply("train", spec(false)).await;
    for i in 0..2 {
        env.pod(&format!("train-1-{i}")).await;
        kubelet_ok(env.standin.kubelet().run(NS, &format!("train-1-{i}")));
    }
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;
    // Suspend deletes the pods; resuming starts the next attempt.
    env.apply("train", spec(true)).await;
    env.status_until("train", "Suspended", |s| s.phase == JobPhase::Suspended)
        .await;
    env.apply("train", spec(false)).await;
    for i in 0..2 {
        env.pod(&format!("train-2-{i}")).await;
        kubelet_ok(env.standin.kubelet().run(NS, &format!("train-2-{i}")));
    }
    kubelet_ok(env.standin.kubelet().succeed(NS, "train-2-0"));
    env.status_until("train", "Succeeded", |s| s.phase == JobPhase::Succeeded)
        .await;
    // The TTL passes: the operator deletes the job.
    env.job_gone("train", "the job deleted after its TTL").await;
    // A job from an older operator, which gave it a finalizer: released.
    env.apply_with_old_finalizer("legacy").await;
    env.pod("legacy-1").await;
    env.finalizers_released("legacy").await;

    let used: BTreeSet<Grant> = env
        .standin
        .stats()
        .requests
        .iter()
        .filter(|r| r.user_agent.starts_with("mtl-operator/") && !r.resource.is_empty())
        .map(|r| {
            let (group, resource) = split_resource(&r.resource);
            (group, resource, r.verb.clone())
        })
        .collect();
    assert!(
        used.contains(&grant("coordination.k8s.io", "leases", "update")),
        "the log holds the operator's requests: {used:?}"
    );
    let needed: BTreeSet<Grant> = used.union(&implied(&used)).cloned().collect();
    let granted = chart_grants();
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the chart's RBAC differs from what the operator used.\nmissing (used, not granted): {missing:?}\nextra (granted, never used): {extra:?}"
    );
}

#[test]
fn request_log_resources_split_into_group_and_resource() {
    assert_eq!(split_resource("pods"), ("".into(), "pods".into()));
    assert_eq!(
        split_resource("multitasktrainingjobs.multitask.dev/status"),
        (
            "multitask.dev".into(),
            "multitasktrainingjobs/status".into()
        )
    );
    assert_eq!(
        split_resource("leases.coordination.k8s.io"),
        ("coordination.k8s.io".into(), "leases".into())
    );
}
