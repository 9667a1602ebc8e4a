//! gs:// storage against a real `gcp-storage-emulator` process (no mocks).
//!
//! Needs the emulator (see `mtl_test_support::gcs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mtl_crds::CheckpointRef;
use mtl_storage::manifest::checkpoint_uri;
use mtl_storage::{Error, MANIFEST_NAME, Manifest, RetryPolicy, Storage, join};
use mtl_test_support::gcs::Emulator;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
/// Bound on any wait in these tests, so that a bug fails a test instead of hanging it.
const WAIT: Duration = Duration::from_secs(120);

/// Writes `size` bytes of a seeded pseudo-random pattern, 1 MiB at a time; returns the SHA-256.
fn pattern_file(path: &Path, size: u64, seed: u64) -> String {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hash = Sha256::new();
    let mut x = seed | 1;
    let mut left = size;
    let mut buf = Vec::with_capacity(MIB as usize);
    while left > 0 {
        buf.clear();
        let n = left.min(MIB);
        while (buf.len() as u64) < n {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.extend_from_slice(&x.to_le_bytes());
        }
        buf.truncate(n as usize);
        hash.update(&buf);
        f.write_all(&buf).unwrap();
        left -= n;
    }
    f.flush().unwrap();
    hex(&hash.finalize())
}

fn sha_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut hash = Sha256::new();
    std::io::copy(&mut f, &mut hash).unwrap();
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn quick_retry(max_elapsed: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 100,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(250),
        max_elapsed,
    }
}

fn entry(uri: String, step: u64) -> CheckpointRef {
    CheckpointRef {
        step,
        uri,
        time: "2026-01-01T00:00:00Z".into(),
        metrics: BTreeMap::from([("mean".to_string(), step as f64)]),
    }
}

/// The trainer's protocol: upload every file of the checkpoint, and only then commit the
/// manifest that names it.
async fn save_checkpoint(
    storage: &Storage,
    manifest: &mut Manifest,
    base: &str,
    step: u64,
    files: &[(&str, &Path)],
    keep: Option<u32>,
) -> mtl_storage::Result<()> {
    let dir = checkpoint_uri(base, step);
    for (name, path) in files {
        storage.upload(path, &join(&dir, name)).await?;
    }
    manifest
        .commit(storage, base, entry(dir, step), keep, None)
        .await
}

/// Downloads every file that the manifest names and checks it against `expected` (file name →
/// SHA-256, per step).
async fn assert_manifest_names_only_whole_checkpoints(
    storage: &Storage,
    base: &str,
    expected: &BTreeMap<u64, Vec<(&str, String)>>,
    tmp: &Path,
) -> Vec<u64> {
    let manifest = Manifest::load_required(storage, base).await.unwrap();
    let mut steps = Vec::new();
    for c in &manifest.checkpoints {
        let files = &expected[&c.step];
        for (name, sha) in files {
            let local = tmp.join(format!("check-{}-{name}", c.step));
            storage.download(&join(&c.uri, name), &local).await.unwrap();
            assert_eq!(&sha_file(&local), sha, "{} of step {}", name, c.step);
        }
        steps.push(c.step);
    }
    steps
}

/// A progress callback that records every value and, once `at` bytes are stored, tells the test
/// and then waits until the test lets it go on. The upload is then between two chunks: nothing
/// is in flight, and what the server has is exactly what it reported.
struct Pause {
    seen: Arc<Mutex<Vec<u64>>>,
    reached: tokio::sync::oneshot::Receiver<u64>,
    release: std::sync::mpsc::Sender<()>,
}

fn pause_at(at: u64) -> (Pause, impl FnMut(u64) + Send + 'static) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (reached_tx, reached) = tokio::sync::oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let mut reached_tx = Some(reached_tx);
    let record = seen.clone();
    let callback = move |n: u64| {
        record.lock().unwrap().push(n);
        if n >= at
            && let Some(tx) = reached_tx.take()
        {
            let _ = tx.send(n);
            let _ = release_rx.recv_timeout(WAIT);
        }
    };
    (
        Pause {
            seen,
            reached,
            release,
        },
        callback,
    )
}

fn spawn_upload(
    storage: &Storage,
    file: &Path,
    uri: &str,
    progress: impl FnMut(u64) + Send + 'static,
) -> tokio::task::JoinHandle<mtl_storage::Result<()>> {
    let (storage, file, uri) = (storage.clone(), file.to_path_buf(), uri.to_string());
    tokio::spawn(async move { storage.upload_with_progress(&file, &uri, progress).await })
}

async fn restart(emu: Emulator) -> Emulator {
    tokio::task::spawn_blocking(move || {
        let mut emu = emu;
        emu.restart();
        emu
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn write_read_list_delete() {
    let emu = Emulator::start();
    let s = emu.storage();
    let base = emu.uri("jobs/a");
    s.write(&join(&base, "x.json"), b"{\"a\":1}".to_vec())
        .await
        .unwrap();
    s.write(&join(&base, "sub/y.txt"), b"world".to_vec())
        .await
        .unwrap();
    s.write(&join(&base, "empty"), Vec::new()).await.unwrap();
    s.write(&emu.uri("jobs/ab/z"), b"not under jobs/a".to_vec())
        .await
        .unwrap();
    assert_eq!(s.read(&join(&base, "x.json")).await.unwrap(), b"{\"a\":1}");
    assert_eq!(s.read(&join(&base, "empty")).await.unwrap(), b"");
    // Overwrite.
    s.write(&join(&base, "x.json"), b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(s.read(&join(&base, "x.json")).await.unwrap(), b"{}");

    let listed = s.list(&base).await.unwrap();
    assert_eq!(
        listed,
        vec![
            join(&base, "empty"),
            join(&base, "sub/y.txt"),
            join(&base, "x.json")
        ],
        "full gs:// URIs, sorted, and jobs/ab is not under jobs/a"
    );
    assert_eq!(s.list(&format!("{base}/")).await.unwrap(), listed);
    assert_eq!(s.list(&emu.uri("")).await.unwrap().len(), 4);
    assert!(s.list(&emu.uri("nothing/here")).await.unwrap().is_empty());

    s.delete(&join(&base, "x.json")).await.unwrap();
    s.delete(&join(&base, "x.json")).await.unwrap();
    let missing = s.read(&join(&base, "x.json")).await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(
        missing.to_string().contains("gs://mtl-test/jobs/a/x.json"),
        "{missing}"
    );

    s.delete_prefix(&base).await.unwrap();
    assert!(s.list(&base).await.unwrap().is_empty());
    assert_eq!(s.list(&emu.uri("jobs")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_uris_and_missing_things_are_clear_errors() {
    let emu = Emulator::start();
    let s = emu.storage();
    for bad in ["gs://", "gs:///x", "gs://Bad_Bucket/x", "gs://mtl-test/"] {
        let err = s.read(bad).await.unwrap_err();
        assert!(matches!(err, Error::BadUri { .. }), "{bad}: {err}");
        assert!(err.to_string().contains(bad), "{err}");
    }
    let err = s.write("gs://no-such-bucket/a", vec![1]).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = s.list("gs://no-such-bucket/a").await.unwrap_err();
    assert!(err.to_string().contains("gs://no-such-bucket/a"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = s
        .download(&emu.uri("missing.bin"), &dir.path().join("out"))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(!dir.path().join("out").exists());
    let err = s
        .upload(&dir.path().join("no-file"), &emu.uri("x"))
        .await
        .unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("no-file"),
        "{err}"
    );
}

#[tokio::test]
async fn large_file_round_trips_through_the_resumable_upload() {
    let emu = Emulator::start();
    let s = emu.storage();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model.safetensors");
    let sha = pattern_file(&src, 64 * MIB, 7);
    let uri = emu.uri("ckpt/checkpoint-1/model.safetensors");

    let mut seen = Vec::new();
    s.upload_with_progress(&src, &uri, |n| seen.push(n))
        .await
        .unwrap();
    let chunk = mtl_storage::DEFAULT_CHUNK_SIZE as u64;
    assert_eq!(
        seen,
        (1..=64 * MIB / chunk)
            .map(|i| i * chunk)
            .collect::<Vec<_>>(),
        "one 8 MiB chunk at a time"
    );

    let out = dir.path().join("down/model.safetensors");
    s.download(&uri, &out).await.unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 64 * MIB);
    assert_eq!(sha_file(&out), sha);

    // fetch() downloads once into the cache, at the object's path.
    let cache = dir.path().join("cache");
    let cached = s.fetch(&uri, &cache).await.unwrap();
    assert_eq!(
        cached,
        cache.join("mtl-test/ckpt/checkpoint-1/model.safetensors")
    );
    assert_eq!(sha_file(&cached), sha);
}

#[tokio::test]
async fn odd_sizes_round_trip() {
    let emu = Emulator::start();
    // Small chunks, so that sizes around chunk boundaries are cheap.
    let s = emu.storage().with_upload_chunk_size(256 * 1024);
    let dir = tempfile::tempdir().unwrap();
    for size in [
        0,
        1,
        256 * 1024 - 1,
        256 * 1024,
        256 * 1024 + 1,
        3 * 256 * 1024 + 17,
    ] {
        let src = dir.path().join(format!("in-{size}"));
        let sha = pattern_file(&src, size, size + 1);
        let uri = emu.uri(&format!("sizes/{size}.bin"));
        s.upload(&src, &uri).await.unwrap();
        let out = dir.path().join(format!("out-{size}"));
        s.download(&uri, &out).await.unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), size, "{size}");
        assert_eq!(sha_file(&out), sha, "{size}");
    }
}

#[tokio::test]
async fn manifest_commit_keeps_the_newest_and_deletes_the_rest() {
    let emu = Emulator::start();
    let s = emu.storage();
    let base = emu.uri("runs/job-1");
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(Manifest::load(&s, &base).await.unwrap(), None);
    let mut m = Manifest::default();
    let mut expected = BTreeMap::new();
    for step in [10, 20, 30, 100] {
        let model = dir.path().join(format!("model-{step}"));
        let state = dir.path().join(format!("state-{step}"));
        let model_sha = pattern_file(&model, 300 * 1024, step);
        let state_sha = pattern_file(&state, 100, step + 1);
        save_checkpoint(
            &s,
            &mut m,
            &base,
            step,
            &[
                ("model.safetensors", &model),
                ("trainer_state.json", &state),
            ],
            Some(2),
        )
        .await
        .unwrap();
        expected.insert(
            step,
            vec![
                ("model.safetensors", model_sha),
                ("trainer_state.json", state_sha),
            ],
        );
    }
    let loaded = Manifest::load(&s, &base).await.unwrap().unwrap();
    assert_eq!(loaded, m);
    let steps: Vec<_> = loaded.checkpoints.iter().map(|c| c.step).collect();
    assert_eq!(steps, [30, 100]);
    assert_eq!(loaded.latest().unwrap().uri, checkpoint_uri(&base, 100));
    assert_eq!(
        assert_manifest_names_only_whole_checkpoints(&s, &base, &expected, dir.path()).await,
        [30, 100]
    );
    // Dropped checkpoints are gone; checkpoint-10 is not confused with checkpoint-100.
    assert!(s.list(&checkpoint_uri(&base, 10)).await.unwrap().is_empty());
    assert!(s.list(&checkpoint_uri(&base, 20)).await.unwrap().is_empty());
    assert_eq!(s.list(&checkpoint_uri(&base, 30)).await.unwrap().len(), 2);
    assert_eq!(s.list(&checkpoint_uri(&base, 100)).await.unwrap().len(), 2);
    assert_eq!(
        s.list(&base).await.unwrap().len(),
        5,
        "two checkpoints of two files and the manifest"
    );
}

#[tokio::test]
async fn missing_empty_or_corrupt_manifest_is_a_clear_error() {
    let emu = Emulator::start();
    let s = emu.storage();
    let base = emu.uri("runs/broken");
    let uri = join(&base, MANIFEST_NAME);

    assert_eq!(Manifest::load(&s, &base).await.unwrap(), None);
    let err = Manifest::load_required(&s, &base).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains(&uri), "{err}");

    s.write(&uri, b" \n".to_vec()).await.unwrap();
    let err = Manifest::load(&s, &base).await.unwrap_err().to_string();
    assert!(err.contains(&uri) && err.contains("empty"), "{err}");

    s.write(&uri, b"{\"checkpoints\": [".to_vec())
        .await
        .unwrap();
    let err = Manifest::load(&s, &base).await.unwrap_err().to_string();
    assert!(err.contains(&uri) && err.contains("not valid"), "{err}");
}

/// The emulator is killed while a chunk is in flight and started again; an in-memory emulator
/// loses the upload session with everything else, so the upload must start over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_survives_an_emulator_crash_mid_chunk() {
    let mut emu = Emulator::start();
    let s = emu
        .storage()
        .with_upload_chunk_size(MIB as usize)
        .with_retry_policy(quick_retry(Duration::from_secs(60)));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model.safetensors");
    let sha = pattern_file(&src, 24 * MIB, 3);
    let base = emu.uri("runs/crash");
    let uri = join(&checkpoint_uri(&base, 1), "model.safetensors");

    let (tx, mut rx) = tokio::sync::watch::channel(0u64);
    let upload = spawn_upload(&s, &src, &uri, move |n| {
        tx.send_replace(n);
    });
    tokio::time::timeout(WAIT, rx.wait_for(|n| *n >= 3 * MIB))
        .await
        .expect("upload progress")
        .expect("the upload ended before 3 MiB were stored");
    // The next chunk is on its way now: kill the emulator under it.
    emu.stop();
    let emu = restart(emu).await;
    let result = tokio::time::timeout(WAIT, upload).await.unwrap().unwrap();

    let mut manifest = Manifest::default();
    match result {
        Ok(()) => {
            let out = dir.path().join("out");
            s.download(&uri, &out).await.unwrap();
            assert_eq!(sha_file(&out), sha, "content after the crash");
            manifest
                .commit(&s, &base, entry(checkpoint_uri(&base, 1), 1), None, None)
                .await
                .unwrap();
            let expected = BTreeMap::from([(1, vec![("model.safetensors", sha)])]);
            assert_eq!(
                assert_manifest_names_only_whole_checkpoints(&s, &base, &expected, dir.path())
                    .await,
                [1]
            );
        }
        Err(e) => {
            // Allowed, as long as it says which object failed; no manifest may name it.
            assert!(e.to_string().contains(&uri), "{e}");
            assert_eq!(Manifest::load(&s, &base).await.unwrap(), None);
        }
    }
    drop(emu);
}

/// Killed between two chunks and restarted: the in-memory session is gone (404), so the
/// upload starts a new session from byte 0 and still completes with the right content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_starts_over_when_the_session_is_lost() {
    let mut emu = Emulator::start();
    let s = emu
        .storage()
        .with_upload_chunk_size(MIB as usize)
        .with_retry_policy(quick_retry(Duration::from_secs(60)));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    let sha = pattern_file(&src, 12 * MIB, 5);
    let uri = emu.uri("lost/big.bin");

    let (pause, progress) = pause_at(4 * MIB);
    let upload = spawn_upload(&s, &src, &uri, progress);
    let Pause {
        seen,
        reached,
        release,
    } = pause;
    tokio::time::timeout(WAIT, reached).await.unwrap().unwrap();
    emu.stop();
    release.send(()).unwrap();
    let emu = restart(emu).await;
    tokio::time::timeout(WAIT, upload)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let seen = seen.lock().unwrap().clone();
    let restart_at = seen.iter().position(|&n| n == 0).expect("a restart from 0");
    assert!(restart_at >= 4, "{seen:?}");
    assert_eq!(seen.last(), Some(&(12 * MIB)));
    let out = dir.path().join("out");
    s.download(&uri, &out).await.unwrap();
    assert_eq!(sha_file(&out), sha);
    drop(emu);
}

/// Killed between two chunks, down while the client retries, then restarted with its data:
/// the client asks the session how much it has and goes on from there (no byte is sent twice,
/// progress never goes back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_resumes_from_the_committed_offset() {
    let data = tempfile::tempdir().unwrap();
    let mut emu = Emulator::start_persistent(data.path());
    let s = emu
        .storage()
        .with_upload_chunk_size(MIB as usize)
        .with_retry_policy(quick_retry(Duration::from_secs(60)));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    let sha = pattern_file(&src, 10 * MIB + 12345, 11);
    let uri = emu.uri("resume/big.bin");

    let (pause, progress) = pause_at(3 * MIB);
    let upload = spawn_upload(&s, &src, &uri, progress);
    let Pause {
        seen,
        reached,
        release,
    } = pause;
    let paused_at = tokio::time::timeout(WAIT, reached).await.unwrap().unwrap();
    emu.stop();
    release.send(()).unwrap();
    let emu = restart(emu).await;
    tokio::time::timeout(WAIT, upload)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "progress went back, so the upload started over: {seen:?}"
    );
    assert!(seen.contains(&paused_at));
    assert_eq!(seen.last(), Some(&(10 * MIB + 12345)));
    let out = dir.path().join("out");
    s.download(&uri, &out).await.unwrap();
    assert_eq!(sha_file(&out), sha);
    drop(emu);
}

/// The emulator dies for good during a checkpoint upload: `upload` gives up within the retry
/// policy with an error naming the object, the manifest is not rewritten, and after the
/// emulator comes back the manifest still names only the previous, whole checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upload_leaves_the_manifest_on_the_last_whole_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    let mut emu = Emulator::start_persistent(data.path());
    let s = emu
        .storage()
        .with_upload_chunk_size(MIB as usize)
        .with_retry_policy(quick_retry(Duration::from_secs(2)));
    let dir = tempfile::tempdir().unwrap();
    let base = emu.uri("runs/dies");
    let first = dir.path().join("first.bin");
    let first_sha = pattern_file(&first, 2 * MIB, 1);
    let mut manifest = Manifest::default();
    save_checkpoint(
        &s,
        &mut manifest,
        &base,
        1,
        &[("model.safetensors", &first)],
        None,
    )
    .await
    .unwrap();

    let second = dir.path().join("second.bin");
    pattern_file(&second, 8 * MIB, 2);
    let uri = join(&checkpoint_uri(&base, 2), "model.safetensors");
    let (pause, progress) = pause_at(2 * MIB);
    let Pause {
        reached, release, ..
    } = pause;
    let (s2, second2, base2) = (s.clone(), second.clone(), base.clone());
    let mut manifest2 = manifest.clone();
    // The trainer's side: upload, and commit only if the upload succeeded.
    let save = tokio::spawn(async move {
        let dir = checkpoint_uri(&base2, 2);
        let uri = join(&dir, "model.safetensors");
        s2.upload_with_progress(&second2, &uri, progress).await?;
        manifest2
            .commit(&s2, &base2, entry(dir, 2), None, None)
            .await
    });
    tokio::time::timeout(WAIT, reached).await.unwrap().unwrap();
    emu.stop();
    release.send(()).unwrap();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(WAIT, save)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let msg = err.to_string();
    eprintln!("upload error: {msg}");
    assert!(matches!(err, Error::Remote { .. }), "{msg}");
    assert!(msg.contains(&uri), "names the object: {msg}");
    assert!(msg.contains("attempt"), "says it retried: {msg}");
    assert!(started.elapsed() < Duration::from_secs(20), "{msg}");

    let emu = restart(emu).await;
    let expected = BTreeMap::from([(1, vec![("model.safetensors", first_sha)])]);
    assert_eq!(
        assert_manifest_names_only_whole_checkpoints(&s, &base, &expected, dir.path()).await,
        [1]
    );
    // The unfinished upload left no object behind.
    assert!(s.list(&checkpoint_uri(&base, 2)).await.unwrap().is_empty());
    drop(emu);
}

/// Production code finds the emulator through `STORAGE_EMULATOR_HOST` (what Google's clients
/// honour). Setting a variable in this process would race with other tests, so the test runs
/// itself again as a child process with the variable set.
#[tokio::test]
async fn storage_emulator_host_selects_the_endpoint() {
    let emu = Emulator::start();
    let uri = emu.uri("env/hello.txt");
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe);
    child
        .args([
            "--exact",
            "env_child_writes_through_storage_emulator_host",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        // No scheme: the form the Python and Go clients accept too.
        .env(
            mtl_storage::EMULATOR_HOST_ENV,
            format!("127.0.0.1:{}", emu.port()),
        )
        .env("MTL_TEST_CHILD_URI", &uri);
    let out = tokio::task::spawn_blocking(move || child.output())
        .await
        .unwrap()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 passed"), "{log}");
    assert_eq!(emu.storage().read(&uri).await.unwrap(), b"hello");
}

#[tokio::test]
#[ignore = "run by storage_emulator_host_selects_the_endpoint"]
async fn env_child_writes_through_storage_emulator_host() {
    let Some(uri) = std::env::var_os("MTL_TEST_CHILD_URI") else {
        return;
    };
    let uri = uri.into_string().unwrap();
    let s = Storage::new();
    s.write(&uri, b"hello".to_vec()).await.unwrap();
    assert_eq!(s.read(&uri).await.unwrap(), b"hello");
}

#[tokio::test]
async fn fetch_downloads_again_when_the_object_changes() {
    let emu = Emulator::start();
    let s = emu.storage();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let uri = "gs://mtl-test/data/train.tsv";
    s.write(uri, b"first version\n".to_vec()).await.unwrap();
    let a = s.fetch(uri, &cache).await.unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), b"first version\n");
    // Fetched again unchanged: the cached copy is used.
    let again = s.fetch(uri, &cache).await.unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), b"first version\n");
    // The object is replaced (a new generation): fetch must not hand out the old copy.
    s.write(uri, b"second, longer version\n".to_vec())
        .await
        .unwrap();
    let b = s.fetch(uri, &cache).await.unwrap();
    assert_eq!(std::fs::read(&b).unwrap(), b"second, longer version\n");
}

/// Several processes of one node (a data-parallel worker's local ranks) fetch the same object
/// into one cache at once: each gets the whole file, and none fails because another renamed a
/// staging file they shared. Separate `Storage` values, as separate processes have.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fetches_of_one_object_into_one_cache_all_succeed() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let uri = "gs://mtl-test/models/m/model.safetensors";
    let src = dir.path().join("src.bin");
    let want = pattern_file(&src, 3 * MIB + 17, 7);
    emu.storage().upload(&src, uri).await.unwrap();
    let fetches: Vec<_> = (0..6)
        .map(|_| {
            let storage = emu.storage();
            let cache = cache.clone();
            tokio::spawn(async move { storage.fetch(uri, &cache).await })
        })
        .collect();
    for fetch in fetches {
        let path = fetch
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("a fetch failed: {e}"));
        assert_eq!(sha_file(&path), want);
    }
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("mtl-test/models/m"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "model.safetensors")
        .collect();
    assert!(leftovers.is_empty(), "staging files left: {leftovers:?}");
}
