//! Watches: event types, bookmarks, 410 Gone, selectors, and kube-runtime's watcher
//! relisting across a forced compaction.

mod common;

use common::{NS, job, start, within};
use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use mtl_crds::MultiTaskTrainingJob;
use serde_json::json;

type Job = MultiTaskTrainingJob;

#[tokio::test]
async fn watch_sees_added_modified_deleted_and_bookmarks() {
    let (_standin, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client, NS);
    let rv = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = jobs
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();

    jobs.create(&PostParams::default(), &job("a"))
        .await
        .unwrap();
    jobs.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"runPolicy": {"suspend": true}}})),
    )
    .await
    .unwrap();
    jobs.delete("a", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    let mut bookmark_rv = None;
    within("three events and a bookmark", async {
        while seen.len() < 3 || bookmark_rv.is_none() {
            match stream.try_next().await.unwrap().expect("stream open") {
                WatchEvent::Added(j) => seen.push(("ADDED", j.resource_version())),
                WatchEvent::Modified(j) => seen.push(("MODIFIED", j.resource_version())),
                WatchEvent::Deleted(j) => seen.push(("DELETED", j.resource_version())),
                WatchEvent::Bookmark(b) => {
                    assert_eq!(b.types.kind, "MultiTaskTrainingJob");
                    assert_eq!(b.types.api_version, "multitask.dev/v1alpha1");
                    if seen.len() == 3 {
                        bookmark_rv = Some(b.metadata.resource_version);
                    }
                }
                WatchEvent::Error(e) => panic!("unexpected error event {e:?}"),
            }
        }
    })
    .await;
    let types: Vec<_> = seen.iter().map(|(t, _)| *t).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"]);
    let rvs: Vec<u64> = seen
        .iter()
        .map(|(_, rv)| rv.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
    let bookmark: u64 = bookmark_rv.unwrap().parse().unwrap();
    assert!(bookmark >= rvs[2]);
}

#[tokio::test]
async fn old_resource_version_is_410_gone_inside_a_200() {
    let (standin, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client, NS);
    let first = jobs
        .create(&PostParams::default(), &job("a"))
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &job("b"))
        .await
        .unwrap();

    // Before compaction the history replays what followed.
    let mut replay = jobs
        .watch(
            &WatchParams::default().timeout(5),
            &first.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let ev = within("replayed ADDED", replay.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev, WatchEvent::Added(j) if j.name_any() == "b"));

    standin.compact();
    let mut stream = jobs
        .watch(
            &WatchParams::default().timeout(5),
            &first.resource_version().unwrap(),
        )
        .await
        .expect("the watch itself is answered 200")
        .boxed();
    match within("the error event", stream.try_next()).await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        within("end of stream", stream.try_next())
            .await
            .unwrap()
            .is_none()
    );

    // A bounded history compacts by itself.
    let small = kube_standin::StandIn::builder()
        .history_capacity(2)
        .start()
        .await
        .unwrap();
    let client = common::client_for(&small.url());
    common::install_crd(&client).await;
    let jobs: Api<Job> = Api::namespaced(client, NS);
    let first = jobs
        .create(&PostParams::default(), &job("a"))
        .await
        .unwrap();
    for name in ["b", "c", "d"] {
        jobs.create(&PostParams::default(), &job(name))
            .await
            .unwrap();
    }
    let mut stream = jobs
        .watch(
            &WatchParams::default().timeout(5),
            &first.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let ev = within("the error event", stream.try_next()).await.unwrap();
    assert!(matches!(ev, Some(WatchEvent::Error(s)) if s.code == 410));
}

#[tokio::test]
async fn label_selector_watch_sees_objects_enter_and_leave() {
    let (_standin, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client, NS);
    let mut stream = jobs
        .watch(
            &WatchParams::default().labels("stage=train").timeout(30),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    jobs.create(&PostParams::default(), &job("a"))
        .await
        .unwrap();
    let set = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"stage": v}}}));
    jobs.patch("a", &PatchParams::default(), &set("train"))
        .await
        .unwrap();
    jobs.patch("a", &PatchParams::default(), &set("done"))
        .await
        .unwrap();
    let mut types = Vec::new();
    within("enter and leave", async {
        while types.len() < 2 {
            match stream.try_next().await.unwrap().unwrap() {
                WatchEvent::Added(_) => types.push("ADDED"),
                WatchEvent::Deleted(_) => types.push("DELETED"),
                WatchEvent::Modified(_) => types.push("MODIFIED"),
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(types, ["ADDED", "DELETED"]);
}

struct JobWatch(futures::stream::BoxStream<'static, Result<Event<Job>, watcher::Error>>);

impl JobWatch {
    async fn next(&mut self) -> Event<Job> {
        loop {
            match within("a watcher event", self.0.next())
                .await
                .expect("stream open")
            {
                Ok(ev) => return ev,
                Err(e) => tracing::debug!(error = %e, "watcher error (expected around compaction)"),
            }
        }
    }

    async fn until_init_done(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        loop {
            match self.next().await {
                Event::InitApply(j) => names.push(j.name_any()),
                Event::InitDone => return names,
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn runtime_watcher_relists_across_forced_compaction() {
    let (standin, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client, NS);
    jobs.create(&PostParams::default(), &job("before"))
        .await
        .unwrap();

    let mut w = JobWatch(
        watcher::watcher(jobs.clone(), watcher::Config::default())
            .default_backoff()
            .boxed(),
    );
    assert_eq!(w.until_init_done().await, ["before"]);

    jobs.create(&PostParams::default(), &job("live"))
        .await
        .unwrap();
    match w.next().await {
        Event::Apply(j) => assert_eq!(j.name_any(), "live"),
        other => panic!("expected Apply(live), got {other:?}"),
    }

    let lists_before = standin.stats().count("list", "multitasktrainingjobs");
    standin.compact_and_expire_watches();
    // Written while the watch is down: the relist must pick it up.
    jobs.create(&PostParams::default(), &job("during"))
        .await
        .unwrap();
    let mut relisted = w.until_init_done().await;
    relisted.sort();
    assert_eq!(relisted, ["before", "during", "live"]);
    assert!(standin.stats().count("list", "multitasktrainingjobs") > lists_before);

    jobs.create(&PostParams::default(), &job("after"))
        .await
        .unwrap();
    loop {
        if let Event::Apply(j) = w.next().await
            && j.name_any() == "after"
        {
            break;
        }
    }
}

#[tokio::test]
async fn runtime_watcher_with_streaming_lists() {
    let (_standin, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client, NS);
    jobs.create(&PostParams::default(), &job("a"))
        .await
        .unwrap();
    let mut w = JobWatch(
        watcher::watcher(jobs.clone(), watcher::Config::default().streaming_lists())
            .default_backoff()
            .boxed(),
    );
    assert_eq!(w.until_init_done().await, ["a"]);
    jobs.create(&PostParams::default(), &job("b"))
        .await
        .unwrap();
    match w.next().await {
        Event::Apply(j) => assert_eq!(j.name_any(), "b"),
        other => panic!("expected Apply(b), got {other:?}"),
    }
}
