use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use tower_test::mock;

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

#[test]
fn next_step_table() {
    let now = t("2026-01-01T00:00:10Z");
    let rows = [
        ("no lease", None, LeaseStep::Create),
        (
            "ours",
            Some(lease(Some("a"), "2026-01-01T00:00:05Z", 15)),
            LeaseStep::Renew,
        ),
        (
            "theirs, fresh",
            Some(lease(Some("b"), "2026-01-01T00:00:05Z", 15)),
            LeaseStep::Wait { holder: "b".into() },
        ),
        (
            "theirs, expired",
            Some(lease(Some("b"), "2026-01-01T00:00:00Z", 5)),
            LeaseStep::TakeOver,
        ),
        (
            "released",
            Some(lease(None, "2026-01-01T00:00:09Z", 1)),
            LeaseStep::TakeOver,
        ),
        (
            "released (empty holder)",
            Some(lease(Some(""), "2026-01-01T00:00:09Z", 15)),
            LeaseStep::TakeOver,
        ),
    ];
    for (name, l, want) in rows {
        assert_eq!(next_step(l.as_ref(), "a", now), want, "{name}");
    }
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

#[tokio::test]
async fn expired_lease_is_taken_over_with_resource_version() {
    let (e, server) = elector();
    let mock = spawn(server, |mut v| async move {
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
    assert!(e.try_acquire_or_renew().await.unwrap());
    finish(mock).await;
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
