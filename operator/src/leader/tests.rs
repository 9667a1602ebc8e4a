use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use tower_test::mock;

use std::time::Duration;

use super::*;
use crate::fixtures::{ApiServerVerifier, finish, respond, respond_status, spawn};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn lease(holder: Option<&str>, renewed: &str, duration: i32) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("mtl-operator".into()),
            resource_version: Some("7".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(Into::into),
            renew_time: Some(MicroTime(t(renewed))),
            acquire_time: Some(MicroTime(t(renewed))),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(2),
            ..Default::default()
        }),
    }
}

/// The step for `l` at local time `at` after the observations before it.
fn step_at(seen: &mut Observed, l: &Lease, start: Instant, at: u64) -> LeaseStep {
    next_step(Some(l), "a", seen, start + Duration::from_secs(at))
}

#[test]
fn next_step_table() {
    let start = Instant::now();
    let rows = [
        (
            "ours",
            lease(Some("a"), "2026-01-01T00:00:05Z", 15),
            LeaseStep::Renew,
        ),
        (
            "theirs, first seen",
            lease(Some("b"), "2026-01-01T00:00:05Z", 15),
            LeaseStep::Wait { holder: "b".into() },
        ),
        (
            "released",
            lease(None, "2026-01-01T00:00:09Z", 1),
            LeaseStep::TakeOver,
        ),
        (
            "released (empty holder)",
            lease(Some(""), "2026-01-01T00:00:09Z", 15),
            LeaseStep::TakeOver,
        ),
    ];
    for (name, l, want) in rows {
        let mut seen = Observed::default();
        assert_eq!(step_at(&mut seen, &l, start, 0), want, "{name}");
    }
    let mut seen = Observed::default();
    assert_eq!(next_step(None, "a", &mut seen, start), LeaseStep::Create);
}

/// Expiry is judged by this replica's clock from when it saw the record change, as client-go
/// does, not by comparing the holder's `renewTime` with the local clock.
#[test]
fn expiry_counts_from_when_the_record_last_changed_here() {
    let start = Instant::now();
    let wait = LeaseStep::Wait { holder: "b".into() };
    // The holder's clock runs an hour behind: every renewTime it writes is "long expired", yet
    // it renews every 5 s, so the lease is live.
    let mut seen = Observed::default();
    for (i, at) in [0u64, 5, 10, 15, 20, 25].into_iter().enumerate() {
        let renewed = format!("2026-01-01T00:00:{:02}Z", i * 5);
        let l = lease(Some("b"), &renewed, 15);
        assert_eq!(step_at(&mut seen, &l, start, at), wait, "renewal {i}");
    }
    // The holder's clock runs an hour ahead and it stopped renewing: expired 15 s (its
    // leaseDurationSeconds) after the record last changed, not an hour later.
    let ahead = lease(Some("b"), "2099-01-01T00:00:00Z", 15);
    let mut seen = Observed::default();
    assert_eq!(step_at(&mut seen, &ahead, start, 0), wait);
    assert_eq!(step_at(&mut seen, &ahead, start, 14), wait);
    assert_eq!(step_at(&mut seen, &ahead, start, 15), LeaseStep::TakeOver);
    // A new holder (the record changed) restarts the count.
    let other = lease(Some("c"), "2099-01-01T00:00:00Z", 15);
    assert_eq!(
        step_at(&mut seen, &other, start, 16),
        LeaseStep::Wait { holder: "c".into() }
    );
}

fn elector() -> (LeaderElector, ApiServerVerifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "ops");
    let cfg = LeaseConfig::new("mtl-operator", "replica-a");
    (
        LeaderElector::new(Api::namespaced(client, "ops"), cfg),
        ApiServerVerifier(handle),
    )
}

#[tokio::test]
async fn first_replica_creates_the_lease() {
    let (e, server) = elector();
    let mock = spawn(server, |mut v| async move {
        let (_, send) = v
            .expect(Method::GET, &format!("{LEASES}/mtl-operator"))
            .await;
        respond_status(send, 404, "NotFound");
        let (req, send) = v.expect(Method::POST, LEASES).await;
        assert_eq!(req.body["spec"]["holderIdentity"], "replica-a");
        assert_eq!(req.body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(req.body["spec"]["leaseTransitions"], 0);
        respond(send, &req.body);
    });
    assert!(e.try_acquire_or_renew().await.unwrap());
    finish(mock).await;
}

#[tokio::test]
async fn losing_the_create_race_is_not_leading() {
    let (e, server) = elector();
    let mock = spawn(server, |mut v| async move {
        let (_, send) = v
            .expect(Method::GET, &format!("{LEASES}/mtl-operator"))
            .await;
        respond_status(send, 404, "NotFound");
        let (_, send) = v.expect(Method::POST, LEASES).await;
        respond_status(send, 409, "AlreadyExists");
    });
    assert!(!e.try_acquire_or_renew().await.unwrap());
    finish(mock).await;
}

#[tokio::test]
async fn valid_lease_of_another_replica_is_left_alone() {
    let (e, server) = elector();
    let mock = spawn(server, |mut v| async move {
        let (_, send) = v
            .expect(Method::GET, &format!("{LEASES}/mtl-operator"))
            .await;
        let fresh = lease(Some("replica-b"), &format_now(), 15);
        respond(send, &fresh);
    });
    assert!(!e.try_acquire_or_renew().await.unwrap());
    finish(mock).await;
}

fn format_now() -> String {
    Timestamp::now().to_string()
}

#[tokio::test(start_paused = true)]
async fn expired_lease_is_taken_over_with_resource_version() {
    let (e, server) = elector();
    let mock = spawn(server, |mut v| async move {
        // First look: renewed long ago by the holder's clock, but only just seen here.
        let (_, send) = v
            .expect(Method::GET, &format!("{LEASES}/mtl-operator"))
            .await;
        respond(send, &lease(Some("replica-b"), "2020-01-01T00:00:00Z", 15));
        // Unchanged a lease duration later: expired.
        let (_, send) = v
            .expect(Method::GET, &format!("{LEASES}/mtl-operator"))
            .await;
        respond(send, &lease(Some("replica-b"), "2020-01-01T00:00:00Z", 15));
        let (req, send) = v
            .expect(Method::PUT, &format!("{LEASES}/mtl-operator"))
            .await;
        assert_eq!(
            req.body["metadata"]["resourceVersion"], "7",
            "replace is guarded"
        );
        assert_eq!(req.body["spec"]["holderIdentity"], "replica-a");
        assert_eq!(req.body["spec"]["leaseTransitions"], 3);
        respond(send, &req.body);
    });
    assert!(!e.try_acquire_or_renew().await.unwrap(), "first seen: wait");
    tokio::time::advance(Duration::from_secs(15)).await;
    assert!(e.try_acquire_or_renew().await.unwrap());
    finish(mock).await;
}

/// A renewal that hangs (the API server never answers) ends leadership within the renew
/// deadline, before the lease could expire for anyone else.
#[tokio::test(start_paused = true)]
async fn a_hung_renewal_ends_leadership_before_the_lease_expires() {
    let (e, server) = elector();
    let cfg = e.config().clone();
    assert!(cfg.renew_deadline < cfg.lease_duration);
    let mock = spawn(server, |mut v| async move {
        // One renewal goes through.
        let (_, send) = v
            .expect(Method::GET, &format!("{LEASES}/mtl-operator"))
            .await;
        respond(send, &lease(Some("replica-a"), "2026-01-01T00:00:00Z", 15));
        let (req, send) = v
            .expect(Method::PUT, &format!("{LEASES}/mtl-operator"))
            .await;
        respond(send, &req.body);
        // The next is never answered.
        let (_req, _send) = v
            .expect(Method::GET, &format!("{LEASES}/mtl-operator"))
            .await;
        std::future::pending::<()>().await;
    });
    let started = Instant::now();
    let lost = e.hold().await;
    let held = started.elapsed();
    assert!(
        lost.to_string()
            .contains("not renewed within the renew deadline"),
        "{lost}"
    );
    // Renewed at renew_interval, then given up renew_deadline after that renewal at the most.
    assert!(
        held <= cfg.renew_interval + cfg.renew_deadline,
        "held {held:?}"
    );
    assert!(
        held < cfg.renew_interval + cfg.lease_duration,
        "stepped down after the lease could have expired: {held:?}"
    );
    mock.abort();
}

#[tokio::test]
async fn holder_renews_and_release_hands_over() {
    let (e, server) = elector();
    let mock = spawn(server, |mut v| async move {
        let (_, send) = v
            .expect(Method::GET, &format!("{LEASES}/mtl-operator"))
            .await;
        respond(send, &lease(Some("replica-a"), "2026-01-01T00:00:00Z", 15));
        let (req, send) = v
            .expect(Method::PUT, &format!("{LEASES}/mtl-operator"))
            .await;
        assert_eq!(
            req.body["spec"]["leaseTransitions"], 2,
            "renewal is no transition"
        );
        assert_eq!(
            req.body["spec"]["acquireTime"],
            "2026-01-01T00:00:00.000000Z"
        );
        respond(send, &req.body);
        // release
        let (_, send) = v
            .expect(Method::GET, &format!("{LEASES}/mtl-operator"))
            .await;
        respond(send, &lease(Some("replica-a"), "2026-01-01T00:00:00Z", 15));
        let (req, send) = v
            .expect(Method::PUT, &format!("{LEASES}/mtl-operator"))
            .await;
        assert!(
            req.body["spec"].get("holderIdentity").is_none(),
            "{}",
            req.body
        );
        respond(send, &req.body);
    });
    assert!(e.try_acquire_or_renew().await.unwrap());
    e.release().await.unwrap();
    finish(mock).await;
}
