//! The operator's Kubernetes clients: every request names the operator (`User-Agent`), and
//! the controller's requests are rate limited on the client side, as client-go's QPS limit
//! does, so a burst of new jobs (or a relist after a restart) cannot flood the API server.
//! Leader election gets a client of its own, outside the limit, so a renewal never queues
//! behind the controller's requests.

use std::time::Duration;

use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::limit::RateLimitLayer;

use crate::Result;

/// The operator's clients, from one configuration.
#[derive(Clone)]
pub struct Clients {
    /// The controller's: at most `qps` requests a second.
    pub api: Client,
    /// Leader election's: unlimited, a request every few seconds.
    pub lease: Client,
}

/// Builds both clients. `qps` 0 turns the limit off.
pub fn connect(mut config: Config, qps: u32) -> Result<Clients> {
    // Names the operator in the API server's audit log (and in the stand-in's request log,
    // from which the tests derive the chart's RBAC).
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(crate::USER_AGENT),
    ));
    let lease = Client::try_from(config.clone())?;
    let builder = ClientBuilder::try_from(config)?;
    let api = match rate_limit(qps) {
        Some(layer) => builder.with_layer(&layer).build(),
        None => builder.build(),
    };
    Ok(Clients { api, lease })
}

/// At most `qps` requests in each second (a watch counts once, when it starts); callers wait
/// for the next second beyond that. `None` for 0.
pub fn rate_limit(qps: u32) -> Option<RateLimitLayer> {
    (qps > 0).then(|| RateLimitLayer::new(u64::from(qps), Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::Api;
    use kube::client::Body;
    use tower_test::mock;

    use super::*;

    /// Twelve GETs at 5 a second: five go out at once, the next five a second later, the
    /// last two a second after that (a paused clock, advanced by hand).
    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_limit_wait_for_the_next_second() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = ClientBuilder::new(service, "default")
            .with_layer(&rate_limit(5).unwrap())
            .build();
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let calls: Vec<_> = (0..12)
            .map(|i| {
                let pods = pods.clone();
                tokio::spawn(async move { pods.get_opt(&format!("p{i}")).await })
            })
            .collect();
        let mut served = 0;
        let mut by_second = Vec::new();
        for _ in 0..3 {
            let mut now = 0;
            // Everything allowed in this second arrives without the clock moving.
            while let Ok(Some((_, send))) =
                tokio::time::timeout(Duration::from_millis(1), handle.next_request()).await
            {
                send.send_response(
                    Response::builder()
                        .status(404)
                        .body(Body::from(
                            br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                                .to_vec(),
                        ))
                        .unwrap(),
                );
                now += 1;
            }
            served += now;
            by_second.push(now);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(by_second, [5, 5, 2]);
        assert_eq!(served, 12);
        for call in calls {
            assert!(call.await.unwrap().unwrap().is_none());
        }
    }

    #[test]
    fn zero_is_no_limit() {
        assert!(rate_limit(0).is_none());
    }
}
