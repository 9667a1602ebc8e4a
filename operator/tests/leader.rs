//! Leader election end to end: the real `mtl-operator` binary (3 s leases, see
//! `Env::operator`) against kube-standin, with a Lease held by a "ghost" replica whose clock is
//! skewed, and a stand-in whose Lease writes hang.
//!
//! Every wait polls with a bounded deadline; nothing sleeps for synchronisation. The test that
//! shows a standby does not take over a renewed lease watches it for a bounded window.

mod common;

use std::time::Duration;

use common::{Env, NS, eventually, lease_holder, metric};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

/// The operator's Lease (`--lease-name` default).
const LEASE: &str = "mtl-operator";
/// `--lease-duration-seconds` of the operators `Env` starts.
const LEASE_DURATION: Duration = Duration::from_secs(3);
/// The ghost's clock is off by this much.
const SKEW: SignedDuration = SignedDuration::from_hours(1);

/// The Lease's `renewTime` as stored.
async fn renew_time(env: &Env) -> Option<MicroTime> {
    leases(env)
        .get(LEASE)
        .await
        .unwrap()
        .spec
        .unwrap()
        .renew_time
}

fn leases(env: &Env) -> Api<Lease> {
    Api::namespaced(env.client.clone(), NS)
}

/// `now` on the ghost's clock, `skew` away from ours.
fn ghost_time(skew: SignedDuration) -> MicroTime {
    MicroTime(
        Timestamp::now()
            .checked_add(skew)
            .expect("a representable time"),
    )
}

/// Creates the Lease held by "ghost", renewed at `renewed` by its clock, for as long as the
/// operators' leases last.
async fn ghost_lease(env: &Env, renewed: MicroTime) {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("ghost".into()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(renewed.clone()),
            renew_time: Some(renewed),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    leases(env)
        .create(&PostParams::default(), &lease)
        .await
        .expect("the ghost's Lease is created");
}

/// The `mtl_operator_leader` gauge of operator `i`, once its metrics are served.
async fn leader_gauge(env: &Env, i: usize) -> Option<f64> {
    env.metrics(i)
        .await
        .and_then(|t| metric(&t, "mtl_operator_leader"))
}

async fn until_leader(env: &Env, i: usize, what: &str) {
    eventually(what, || async {
        (leader_gauge(env, i).await == Some(1.0)).then_some(())
    })
    .await;
}

/// A holder whose clock runs an hour ahead and that stopped renewing: its lease expires a
/// lease duration after the standby first saw it, not an hour later.
#[tokio::test]
async fn a_lease_renewed_on_a_clock_ahead_expires_after_its_duration() {
    let mut env = Env::start().await;
    ghost_lease(&env, ghost_time(SKEW)).await;
    let started = Instant::now();
    let op = env.operator("op-a");
    until_leader(&env, op, "op-a to take over the ghost's lease").await;
    let took = started.elapsed();
    assert!(
        took >= LEASE_DURATION,
        "took over after {took:?}, before the lease ({LEASE_DURATION:?}) had run out"
    );
    assert!(
        took < LEASE_DURATION * 4,
        "took over after {took:?}: the skewed renewTime was trusted\n{}",
        env.logs()
    );
    let spec = leases(&env).get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("op-a"));
    assert_eq!(spec.lease_transitions, Some(1));
}

/// A holder whose clock runs an hour behind: every renewTime it writes looks long expired, yet
/// it renews, so the standby waits; once it stops, the standby takes over.
#[tokio::test]
async fn a_lease_renewed_on_a_clock_behind_is_kept_while_renewed() {
    let mut env = Env::start().await;
    ghost_lease(&env, ghost_time(-SKEW)).await;
    let api = leases(&env);
    let ghost = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            let Ok(mut lease) = api.get(LEASE).await else {
                continue;
            };
            let spec = lease.spec.get_or_insert_default();
            if spec.holder_identity.as_deref() != Some("ghost") {
                return;
            }
            spec.renew_time = Some(ghost_time(-SKEW));
            let _ = api.replace(LEASE, &PostParams::default(), &lease).await;
        }
    });
    let op = env.operator("op-a");
    eventually("op-a standing by", || async {
        (leader_gauge(&env, op).await == Some(0.0)).then_some(())
    })
    .await;

    // Several lease durations: the ghost keeps renewing and op-a keeps standing by.
    let window = Instant::now() + LEASE_DURATION * 4;
    let first_renewal = renew_time(&env).await;
    while Instant::now() < window {
        assert_eq!(lease_holder(&env).await.as_deref(), Some("ghost"));
        assert_eq!(
            leader_gauge(&env, op).await,
            Some(0.0),
            "op-a took a lease that was being renewed\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last_renewal = renew_time(&env).await;
    assert_ne!(first_renewal, last_renewal, "the ghost renewed meanwhile");
    assert!(
        env.logs().contains("standing by"),
        "op-a looked at the lease\n{}",
        env.logs()
    );

    ghost.abort();
    let stopped = Instant::now();
    until_leader(&env, op, "op-a to take over once the ghost stopped").await;
    // The ghost renewed at most a second before it stopped.
    assert!(stopped.elapsed() >= LEASE_DURATION - Duration::from_secs(1));
    assert_eq!(lease_holder(&env).await.as_deref(), Some("op-a"));
}

/// The leader's renewals hang (the API server holds its Lease writes): it steps down within
/// the renew deadline (two thirds of the lease), before a standby could see the lease
/// expire, and exits; a standby takes over once writes go through again.
#[tokio::test]
async fn a_leader_whose_renewals_hang_steps_down_and_a_standby_takes_over() {
    let mut env = Env::start().await;
    let a = env.operator("op-a");
    until_leader(&env, a, "op-a to lead").await;
    let b = env.operator("op-b");
    eventually("op-b standing by", || async {
        (leader_gauge(&env, b).await == Some(0.0)).then_some(())
    })
    .await;

    env.standin
        .inject_fault(kube_standin::Fault::hang("leases", NS));
    let hung = Instant::now();
    let exit = env.wait_exit(a).await;
    let stepped_down = hung.elapsed();
    assert!(!exit.success(), "op-a exits with an error: {exit:?}");
    assert!(
        stepped_down < LEASE_DURATION,
        "op-a stepped down {stepped_down:?} after its renewals hung, not within the lease ({LEASE_DURATION:?})\n{}",
        env.logs()
    );
    assert!(env.logs().contains("lost leadership"), "{}", env.logs());
    // op-b cannot write the lease either, so it does not lead yet.
    assert_eq!(leader_gauge(&env, b).await, Some(0.0));
    assert_eq!(lease_holder(&env).await.as_deref(), Some("op-a"));

    env.standin.clear_faults();
    until_leader(&env, b, "op-b to take over").await;
    assert_eq!(lease_holder(&env).await.as_deref(), Some("op-b"));
}
