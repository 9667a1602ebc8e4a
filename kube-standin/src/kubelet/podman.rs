//! The kubelet stand-in's container runtime: runs each pod's containers with podman on this
//! machine, the way a node's kubelet runs them through its CRI runtime.
//!
//! Taken from the pod spec: `image` (never pulled: it must be in podman's local storage),
//! `command` and `args`, `env` (values, and `fieldRef`s to the pod's own fields),
//! `workingDir`, `emptyDir` volumes (directories under [`PodmanConfig::root`], shared by the
//! pod's containers, with `subPath` and `readOnly`), the security context (`runAsUser`,
//! `runAsGroup`, `fsGroup`, `supplementalGroups`, `runAsNonRoot`, `readOnlyRootFilesystem`,
//! `allowPrivilegeEscalation`, capabilities, `privileged`) and `terminationMessagePath`.
//! Every container shares the host's network, so servers on 127.0.0.1 are reachable; its
//! hostname is the pod's name. Not applied: resource requests and limits (GPUs included),
//! probes, init containers, other volume types, `$(VAR)` expansion, image pulls.
//!
//! Status: containers wait in `ContainerCreating`, or in `ErrImageNeverPull`/`ErrImagePull`,
//! `CreateContainerConfigError` or `CreateContainerError` with podman's message when one cannot
//! start (the pod then stays `Pending`); then `running`; then `terminated` with the exit code
//! and the termination message: the file the container wrote, or under
//! `FallbackToLogsOnError`, when that is empty and the container failed, the tail of its log.
//! The phase follows as on a node: `Running` once every container started, `Succeeded` or
//! `Failed` when all ended under `restartPolicy: Never`; under `OnFailure`/`Always` exited
//! containers restart after the kubelet's back-off (10 s doubling to 5 min).
//!
//! Stopping: a graceful deletion stops every container with `podman stop --time
//! <deletionGracePeriodSeconds>` (SIGTERM, then SIGKILL when the grace period runs out),
//! records how each ended (the pod goes `Failed`, or `Succeeded` if all exited 0), then
//! deletes the pod with grace 0. A pod made `Failed` by a disruption (eviction, node shutdown)
//! has its containers stopped the same way with the pod's `terminationGracePeriodSeconds`; a
//! pod removed outright has them killed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::watch;

use super::conditions::set_condition;
use crate::Error;
use crate::clock::now_rfc3339;
use crate::error::ApiError;
use crate::store::DeleteOpts;

/// What the runtime needs of the kubelet that drives it: the node's writes to its pods.
pub(crate) trait Node: Send + Sync {
    /// Changes pod `ns/name` with `f`; an `Err` from `f` leaves the pod as it was.
    fn update_pod(
        &self,
        ns: &str,
        name: &str,
        f: &mut dyn FnMut(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, Error>;
    /// Binds the pod to the node, its containers being created.
    fn schedule(&self, ns: &str, name: &str) -> Result<Value, Error>;
    /// The pod as stored now.
    fn pod(&self, ns: &str, name: &str) -> Option<Value>;
    /// Deletes the pod.
    fn delete_pod(&self, ns: &str, name: &str, opts: &DeleteOpts) -> Result<(), ApiError>;
}

/// Settings of the podman runtime ([`super::KubeletConfig::podman`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodmanConfig {
    /// The podman executable; `podman` on `PATH` when empty. It runs with this process's
    /// environment (`CONTAINERS_CONF`, `CONTAINERS_STORAGE_CONF`).
    pub program: PathBuf,
    /// Where emptyDir volumes and termination-message files (`<root>/pods/<uid>/`) and
    /// container logs (`<root>/logs/<namespace>_<pod>_<container>_<restart>.log`) live; a new
    /// directory under the system temp directory when empty.
    pub root: PathBuf,
    /// Variables put in every container's environment before the pod's own, as a mutating
    /// admission webhook would (for example `STORAGE_EMULATOR_HOST`).
    pub extra_env: BTreeMap<String, String>,
}

/// Most of a termination message the kubelet keeps (bytes).
const MESSAGE_LIMIT: usize = 4096;
/// `FallbackToLogsOnError`: the last this many log lines, at most [`LOG_TAIL_BYTES`].
const LOG_TAIL_LINES: usize = 80;
const LOG_TAIL_BYTES: usize = 2048;
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

static ROOTS: AtomicU64 = AtomicU64::new(0);

/// One pod this runtime runs.
struct PodRun {
    /// Set to the grace period (seconds) once the containers are to stop.
    stop: watch::Sender<Option<i64>>,
    task: tokio::task::JoinHandle<()>,
}

/// The podman runtime of one kubelet stand-in.
pub(crate) struct Runtime {
    program: PathBuf,
    root: PathBuf,
    extra_env: BTreeMap<String, String>,
    pods: Mutex<HashMap<String, PodRun>>,
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn is_deleting(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

fn is_terminal(pod: &Value) -> bool {
    matches!(s(pod, "/status/phase"), "Succeeded" | "Failed")
}

impl Runtime {
    pub(crate) fn new(config: &PodmanConfig) -> Self {
        let program = if config.program.as_os_str().is_empty() {
            PathBuf::from("podman")
        } else {
            config.program.clone()
        };
        let root = if config.root.as_os_str().is_empty() {
            std::env::temp_dir().join(format!(
                "kube-standin-{}-{}",
                std::process::id(),
                ROOTS.fetch_add(1, Ordering::Relaxed)
            ))
        } else {
            config.root.clone()
        };
        Self {
            program,
            root,
            extra_env: config.extra_env.clone(),
            pods: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this runtime runs the pod (then the simulated kubelet leaves it alone).
    pub(crate) fn manages(&self, pod: &Value) -> bool {
        self.lock().contains_key(s(pod, "/metadata/uid"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PodRun>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Brings containers in line with the stored pods: starts new pods' containers, stops
    /// those of deleted or disrupted pods, kills those of pods that are gone.
    pub(crate) fn sync(self: &Arc<Self>, kubelet: &Arc<dyn Node>, pods: &[Value]) {
        let mut runs = self.lock();
        let mut present = std::collections::HashSet::new();
        for pod in pods {
            let uid = s(pod, "/metadata/uid");
            if uid.is_empty() {
                continue;
            }
            present.insert(uid.to_string());
            match runs.get(uid) {
                None => {
                    let unscheduled = s(pod, "/spec/nodeName").is_empty();
                    if unscheduled && !is_deleting(pod) && s(pod, "/status/phase") == "Pending" {
                        let (stop, stop_rx) = watch::channel(None);
                        let task = tokio::spawn(run_pod(
                            self.clone(),
                            kubelet.clone(),
                            pod.clone(),
                            stop_rx,
                        ));
                        runs.insert(uid.to_string(), PodRun { stop, task });
                    }
                }
                Some(run) => {
                    let grace = if is_deleting(pod) {
                        pod.pointer("/metadata/deletionGracePeriodSeconds")
                            .and_then(Value::as_i64)
                    } else if is_terminal(pod) {
                        pod.pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                            .or(Some(30))
                    } else {
                        None
                    };
                    if let Some(g) = grace {
                        request_stop(&run.stop, g.max(0));
                        // Containers that never started (or already ended) have nothing
                        // left to stop: the deletion finishes now.
                        if is_deleting(pod) && run.task.is_finished() {
                            finish_deletion(kubelet.as_ref(), pod);
                        }
                    }
                }
            }
        }
        let gone: Vec<String> = runs
            .keys()
            .filter(|uid| !present.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(run) = runs.remove(&uid) {
                request_stop(&run.stop, 0);
                let dir = self.pod_dir(&uid);
                tokio::spawn(async move {
                    let _stop = run.stop;
                    let _ = run.task.await;
                    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                        tracing::debug!(dir = %dir.display(), error = %e, "pod directory not removed");
                    }
                });
            }
        }
    }

    fn log_path(&self, ns: &str, pod: &str, container: &str, restart: u32) -> PathBuf {
        self.root
            .join("logs")
            .join(format!("{ns}_{pod}_{container}_{restart}.log"))
    }

    /// A container's log as text (see [`super::Kubelet::container_log`]).
    pub(crate) fn log(&self, ns: &str, pod: &str, container: &str, restart: u32) -> Option<String> {
        let raw = std::fs::read(self.log_path(ns, pod, container, restart)).ok()?;
        Some(log_text(&String::from_utf8_lossy(&raw)))
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }

    fn podman(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.stdin(std::process::Stdio::null()).kill_on_drop(false);
        c
    }

    /// Runs podman; stdout on success, podman's own message on failure.
    async fn run_podman(&self, args: &[String]) -> Result<String, String> {
        let out = self
            .podman()
            .args(args)
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err.trim();
            Err(err.strip_prefix("Error: ").unwrap_or(err).to_string())
        }
    }
}

/// Asks the pod's containers to stop within `grace` seconds (a shorter grace replaces a
/// longer one, as when a graceful deletion is followed by a forced one).
fn request_stop(stop: &watch::Sender<Option<i64>>, grace: i64) {
    stop.send_if_modified(|current| match *current {
        Some(g) if g <= grace => false,
        _ => {
            *current = Some(grace);
            true
        }
    });
}

/// What the pod spec asks of one container, resolved for `podman run`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub pull_policy: String,
    pub termination_message_path: String,
    pub fallback_to_logs: bool,
    /// `podman run` arguments after `run`, up to and including the image and args, with the
    /// container name and log path still to be filled in ([`Self::run_args`]).
    args_after_name: Vec<String>,
    /// Whether the image's own user must be checked against `runAsNonRoot`.
    pub check_image_user: bool,
}

impl ContainerPlan {
    /// `podman run` arguments for restart number `restart`.
    pub(crate) fn run_args(&self, container_name: &str, log: &Path) -> Vec<String> {
        let mut args = vec![
            "run".to_string(),
            "--detach".into(),
            "--name".into(),
            container_name.into(),
            "--log-driver".into(),
            "k8s-file".into(),
            "--log-opt".into(),
            format!("path={}", log.display()),
        ];
        args.extend(self.args_after_name.iter().cloned());
        args
    }
}

/// The effective security setting: the container's, else the pod's.
fn security<'a>(pod_spec: &'a Value, container: &'a Value, field: &str) -> Option<&'a Value> {
    container
        .pointer(&format!("/securityContext/{field}"))
        .filter(|v| !v.is_null())
        .or_else(|| {
            pod_spec
                .pointer(&format!("/securityContext/{field}"))
                .filter(|v| !v.is_null())
        })
}

fn field_ref(pod: &Value, path: &str) -> Result<String, String> {
    let meta = |k: &str| s(pod, &format!("/metadata/{k}")).to_string();
    let from_map = |map: &str, key: &str| {
        pod.pointer(&format!("/metadata/{map}"))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let quoted_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
    };
    Ok(match path {
        "metadata.name" => meta("name"),
        "metadata.namespace" => meta("namespace"),
        "metadata.uid" => meta("uid"),
        "spec.nodeName" => s(pod, "/spec/nodeName").to_string(),
        "spec.serviceAccountName" => s(pod, "/spec/serviceAccountName").to_string(),
        // Host networking: the pod's address is the host's.
        "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
        _ => {
            if let Some(k) = quoted_key("metadata.labels") {
                from_map("labels", k)
            } else if let Some(k) = quoted_key("metadata.annotations") {
                from_map("annotations", k)
            } else {
                return Err(format!("unsupported fieldRef fieldPath {path:?}"));
            }
        }
    })
}

/// The container's environment: `extra` first, then the spec's `env` in order.
fn environment(
    pod: &Value,
    container: &Value,
    extra: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> =
        extra.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for e in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(e, "/name").to_string();
        let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
            v.to_string()
        } else if let Some(path) = e
            .pointer("/valueFrom/fieldRef/fieldPath")
            .and_then(Value::as_str)
        {
            field_ref(pod, path)?
        } else if e.get("valueFrom").is_some_and(|v| !v.is_null()) {
            return Err(format!(
                "env {name}: only value and valueFrom.fieldRef are supported by the podman kubelet"
            ));
        } else {
            String::new()
        };
        env.retain(|(k, _)| *k != name);
        env.push((name, value));
    }
    Ok(env)
}

/// Plans every container of `pod`; `dir` is the pod's directory on this machine. An error is
/// the `CreateContainerConfigError` message.
pub(crate) fn plan_pod(
    pod: &Value,
    dir: &Path,
    extra_env: &BTreeMap<String, String>,
) -> Result<Vec<ContainerPlan>, String> {
    let spec = pod.get("spec").cloned().unwrap_or(json!({}));
    let pod_name = s(pod, "/metadata/name");
    let ns = s(pod, "/metadata/namespace");
    let uid = s(pod, "/metadata/uid");
    let mut empty_dirs = BTreeMap::new();
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(v, "/name");
        if v.get("emptyDir").is_some() {
            empty_dirs.insert(name.to_string(), dir.join("volumes").join(name));
        }
    }
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if containers.is_empty() {
        return Err("the pod has no containers".into());
    }
    let fs_group = spec
        .pointer("/securityContext/fsGroup")
        .and_then(Value::as_i64);
    let supplemental: Vec<i64> = spec
        .pointer("/securityContext/supplementalGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .collect();
    let mut plans = Vec::new();
    for c in &containers {
        let name = s(c, "/name").to_string();
        let image = s(c, "/image").to_string();
        if image.is_empty() {
            return Err(format!("container {name}: no image"));
        }
        let mut args: Vec<String> = vec![
            "--pull".into(),
            "never".into(),
            "--network".into(),
            "host".into(),
            "--hostname".into(),
            pod_name.into(),
        ];
        for (k, v) in [
            ("io.kubernetes.pod.name", pod_name),
            ("io.kubernetes.pod.namespace", ns),
            ("io.kubernetes.pod.uid", uid),
            ("io.kubernetes.container.name", &name),
        ] {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        let user = security(&spec, c, "runAsUser").and_then(Value::as_i64);
        let group = security(&spec, c, "runAsGroup").and_then(Value::as_i64);
        let non_root = security(&spec, c, "runAsNonRoot").and_then(Value::as_bool) == Some(true);
        if non_root && user == Some(0) {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: \"{pod_name}_{ns}({uid})\", container: {name})"
            ));
        }
        match (user, group) {
            (Some(u), Some(g)) => args.extend(["--user".into(), format!("{u}:{g}")]),
            (Some(u), None) => args.extend(["--user".into(), u.to_string()]),
            // A group without a user: the image's user with this primary group.
            (None, Some(g)) => args.extend(["--group-add".into(), g.to_string()]),
            (None, None) => {}
        }
        for g in fs_group.iter().chain(supplemental.iter()) {
            args.extend(["--group-add".into(), g.to_string()]);
        }
        if security(&spec, c, "readOnlyRootFilesystem").and_then(Value::as_bool) == Some(true) {
            // Kubernetes mounts no tmpfs on /tmp, /run, /var/tmp as podman would by default.
            args.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
        }
        if security(&spec, c, "privileged").and_then(Value::as_bool) == Some(true) {
            args.push("--privileged".into());
        }
        if security(&spec, c, "allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false) {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        for (key, flag) in [("drop", "--cap-drop"), ("add", "--cap-add")] {
            for cap in c
                .pointer(&format!("/securityContext/capabilities/{key}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                args.extend([flag.into(), cap.to_string()]);
            }
        }
        if let Some(wd) = c
            .get("workingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
        {
            args.extend(["--workdir".into(), wd.to_string()]);
        }
        for (k, v) in
            environment(pod, c, extra_env).map_err(|e| format!("container {name}: {e}"))?
        {
            args.extend(["--env".into(), format!("{k}={v}")]);
        }
        for m in c
            .get("volumeMounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let vol = s(m, "/name");
            let Some(host) = empty_dirs.get(vol) else {
                return Err(format!(
                    "container {name}: volume {vol:?} is not an emptyDir volume of the pod (the podman kubelet mounts emptyDir volumes only)"
                ));
            };
            let sub = s(m, "/subPath");
            if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                return Err(format!(
                    "container {name}: subPath {sub:?} must be a relative path without .."
                ));
            }
            let host = if sub.is_empty() {
                host.clone()
            } else {
                host.join(sub)
            };
            let ro = m.get("readOnly").and_then(Value::as_bool) == Some(true);
            args.extend([
                "--volume".into(),
                format!(
                    "{}:{}{}",
                    host.display(),
                    s(m, "/mountPath"),
                    if ro { ":ro" } else { "" }
                ),
            ]);
        }
        let termination_message_path = match s(c, "/terminationMessagePath") {
            "" => "/dev/termination-log".to_string(),
            p => p.to_string(),
        };
        args.extend([
            "--volume".into(),
            format!(
                "{}:{termination_message_path}",
                termination_file(dir, &name).display()
            ),
        ]);
        if let Some(cmd) = c
            .get("command")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        {
            args.extend(["--entrypoint".into(), Value::Array(cmd.clone()).to_string()]);
        }
        args.push(image.clone());
        args.extend(
            c.get("args")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|a| {
                    a.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| a.to_string())
                }),
        );
        plans.push(ContainerPlan {
            name: name.clone(),
            image,
            pull_policy: s(c, "/imagePullPolicy").to_string(),
            termination_message_path,
            fallback_to_logs: s(c, "/terminationMessagePolicy") == "FallbackToLogsOnError",
            args_after_name: args,
            check_image_user: non_root && user.is_none(),
        });
    }
    Ok(plans)
}

fn termination_file(dir: &Path, container: &str) -> PathBuf {
    dir.join("termination").join(container)
}

/// The `runAsNonRoot` check of an image's own user (kubelet's messages).
pub(crate) fn check_image_user(user: &str) -> Result<(), String> {
    let uid = user.split(':').next().unwrap_or_default();
    match uid {
        "" | "root" | "0" => Err("container has runAsNonRoot and image will run as root".into()),
        u if u.parse::<u32>().is_err() => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({u}), cannot verify user is non-root"
        )),
        _ => Ok(()),
    }
}

/// The text of a k8s-file log (`<time> <stream> <F|P> <text>` lines).
pub(crate) fn log_text(raw: &str) -> String {
    let mut out = String::new();
    for line in raw.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_time, _stream, tag, text) = (parts.next(), parts.next(), parts.next(), parts.next());
        out.push_str(text.unwrap_or_default());
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

/// `FallbackToLogsOnError`: the last lines of the log, at most [`LOG_TAIL_BYTES`].
pub(crate) fn log_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    let mut start = tail.len().saturating_sub(LOG_TAIL_BYTES);
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    tail[start..].to_string()
}

fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The pod phase and readiness from its containers' states (restartPolicy applied by the
/// caller: a container that will restart is not `terminated` here).
pub(crate) fn phase_of(statuses: &[Value], containers: usize) -> (&'static str, bool) {
    let started = statuses
        .iter()
        .filter(|c| {
            c.pointer("/state/running").is_some()
                || c.pointer("/state/terminated").is_some()
                || c["restartCount"].as_i64().unwrap_or(0) > 0
        })
        .count();
    let terminated: Vec<i64> = statuses
        .iter()
        .filter_map(|c| {
            c.pointer("/state/terminated/exitCode")
                .and_then(Value::as_i64)
        })
        .collect();
    if terminated.len() == containers {
        let ok = terminated.iter().all(|&c| c == 0);
        (if ok { "Succeeded" } else { "Failed" }, false)
    } else if started == containers {
        let ready = statuses
            .iter()
            .all(|c| c.pointer("/state/running").is_some());
        ("Running", ready)
    } else {
        ("Pending", false)
    }
}

/// Context of one pod's run.
#[derive(Clone)]
struct PodCtx {
    rt: Arc<Runtime>,
    kubelet: Arc<dyn Node>,
    ns: String,
    name: String,
    uid: String,
    dir: PathBuf,
    restart_policy: String,
    container_count: usize,
}

impl PodCtx {
    /// Sets container `name`'s status with `f`, then the pod's phase and conditions.
    fn update_container(&self, name: &str, f: impl FnOnce(&mut Value)) {
        let uid = self.uid.clone();
        let count = self.container_count;
        let mut f = Some(f);
        let result = self.kubelet.update_pod(&self.ns, &self.name, &mut |pod| {
            if s(pod, "/metadata/uid") != uid {
                return Err(ApiError::bad_request("the pod was replaced"));
            }
            if !pod["status"]["containerStatuses"].is_array() {
                pod["status"]["containerStatuses"] = json!([]);
            }
            let statuses = pod["status"]["containerStatuses"]
                .as_array_mut()
                .expect("containerStatuses is an array");
            let i = match statuses.iter().position(|c| c["name"] == name) {
                Some(i) => i,
                None => {
                    statuses.push(json!({"name": name, "restartCount": 0, "ready": false, "started": false, "lastState": {}}));
                    statuses.len() - 1
                }
            };
            if let Some(f) = f.take() {
                f(&mut statuses[i]);
            }
            let snapshot = statuses.clone();
            let (phase, ready) = phase_of(&snapshot, count);
            let status = &mut pod["status"];
            let current = status["phase"].as_str().unwrap_or("Pending");
            // A terminal phase stays (a disruption may have set it); otherwise it follows.
            if !matches!(current, "Succeeded" | "Failed") {
                status["phase"] = json!(phase);
                let now = now_rfc3339();
                match phase {
                    "Running" => {
                        if status.get("startTime").is_none_or(Value::is_null) {
                            status["startTime"] = json!(now);
                        }
                        status["podIP"] = json!("127.0.0.1");
                        status["podIPs"] = json!([{"ip": "127.0.0.1"}]);
                        set_condition(status, "PodReadyToStartContainers", "True", None, None);
                        set_condition(status, "Initialized", "True", None, None);
                        let r = if ready { "True" } else { "False" };
                        let why = (!ready).then_some("ContainersNotReady");
                        set_condition(status, "ContainersReady", r, why, None);
                        set_condition(status, "Ready", r, why, None);
                    }
                    "Succeeded" | "Failed" => {
                        set_condition(status, "PodReadyToStartContainers", "False", None, None);
                        set_condition(status, "ContainersReady", "False", Some("PodCompleted"), None);
                        set_condition(status, "Ready", "False", Some("PodCompleted"), None);
                    }
                    _ => {}
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::debug!(ns = %self.ns, pod = %self.name, container = name, error = %e, "container status not recorded");
        }
    }

    fn set_waiting(&self, name: &str, image: &str, reason: &str, message: &str) {
        let image = image.to_string();
        self.update_container(name, |c| {
            let mut waiting = json!({"reason": reason});
            if !message.is_empty() {
                waiting["message"] = json!(message);
            }
            c["image"] = json!(image);
            c["state"] = json!({"waiting": waiting});
            c["ready"] = json!(false);
            c["started"] = json!(false);
        });
    }

    fn log_path(&self, container: &str, restart: u32) -> PathBuf {
        self.rt.log_path(&self.ns, &self.name, container, restart)
    }
}

async fn run_pod(
    rt: Arc<Runtime>,
    kubelet: Arc<dyn Node>,
    pod: Value,
    stop: watch::Receiver<Option<i64>>,
) {
    let uid = s(&pod, "/metadata/uid").to_string();
    let ctx = PodCtx {
        dir: rt.pod_dir(&uid),
        rt: rt.clone(),
        kubelet: kubelet.clone(),
        ns: s(&pod, "/metadata/namespace").to_string(),
        name: s(&pod, "/metadata/name").to_string(),
        uid,
        restart_policy: match s(&pod, "/spec/restartPolicy") {
            "" => "Always".into(),
            p => p.to_string(),
        },
        container_count: pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
    };
    if let Err(e) = kubelet.schedule(&ctx.ns, &ctx.name) {
        tracing::debug!(ns = %ctx.ns, pod = %ctx.name, error = %e, "pod not scheduled");
        return;
    }
    let plans = match plan_pod(&pod, &ctx.dir, &rt.extra_env) {
        Ok(p) => p,
        Err(message) => {
            tracing::warn!(ns = %ctx.ns, pod = %ctx.name, %message, "pod cannot run");
            for c in pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                ctx.set_waiting(
                    s(c, "/name"),
                    s(c, "/image"),
                    "CreateContainerConfigError",
                    &message,
                );
            }
            return;
        }
    };
    if let Err(e) = prepare_dirs(&pod, &ctx, &plans).await {
        for plan in &plans {
            ctx.set_waiting(&plan.name, &plan.image, "CreateContainerConfigError", &e);
        }
        return;
    }
    let runs = plans.into_iter().map(|plan| {
        let ctx = ctx.clone();
        let stop = stop.clone();
        tokio::spawn(async move { run_container(&ctx, &plan, stop).await })
    });
    for r in join_all(runs.collect()).await {
        if let Err(e) = r {
            tracing::warn!(error = %e, "container task failed");
        }
    }
    // A graceful deletion ends once every container has stopped.
    if stop.borrow().is_some()
        && let Some(current) = kubelet.pod(&ctx.ns, &ctx.name)
        && is_deleting(&current)
        && s(&current, "/metadata/uid") == ctx.uid
    {
        finish_deletion(kubelet.as_ref(), &current);
    }
}

/// Deletes a pod whose containers have stopped (grace 0, only this very pod).
fn finish_deletion(kubelet: &dyn Node, pod: &Value) {
    let (ns, name) = (s(pod, "/metadata/namespace"), s(pod, "/metadata/name"));
    let opts = DeleteOpts {
        grace_period_seconds: Some(0),
        precondition_uid: Some(s(pod, "/metadata/uid").to_string()),
        ..DeleteOpts::default()
    };
    if let Err(e) = kubelet.delete_pod(ns, name, &opts) {
        tracing::debug!(%ns, pod = %name, error = %e, "pod deletion not finished");
    }
}

async fn join_all<T>(
    handles: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await);
    }
    out
}

/// emptyDir directories (mode 0777, or group `fsGroup` with setgid, as the kubelet makes
/// them), empty termination-message files the container may write, and the log directory.
async fn prepare_dirs(pod: &Value, ctx: &PodCtx, plans: &[ContainerPlan]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let fs_group = pod
        .pointer("/spec/securityContext/fsGroup")
        .and_then(Value::as_i64);
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    let mut dirs = vec![ctx.dir.join("termination"), ctx.rt.root.join("logs")];
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.get("emptyDir").is_some() {
            dirs.push(ctx.dir.join("volumes").join(s(v, "/name")));
        }
    }
    for d in &dirs {
        tokio::fs::create_dir_all(d).await.map_err(|e| io(d, e))?;
    }
    for d in dirs.iter().skip(2) {
        let mode = if fs_group.is_some() { 0o2777 } else { 0o777 };
        tokio::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(|e| io(d, e))?;
        if let Some(g) = fs_group {
            let gid = u32::try_from(g).map_err(|_| format!("fsGroup {g} is out of range"))?;
            std::os::unix::fs::chown(d, None, Some(gid)).map_err(|e| io(d, e))?;
        }
    }
    for plan in plans {
        reset_termination_file(&termination_file(&ctx.dir, &plan.name)).await?;
    }
    Ok(())
}

async fn reset_termination_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    tokio::fs::write(path, b"").await.map_err(io)?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .await
        .map_err(io)
}

/// How one run of a container ended.
struct Exit {
    code: i64,
    started_at: String,
    finished_at: String,
    container_id: String,
}

/// Runs one container to its end, restarting it as `restartPolicy` says.
async fn run_container(ctx: &PodCtx, plan: &ContainerPlan, mut stop: watch::Receiver<Option<i64>>) {
    let rt = &ctx.rt;
    if plan.check_image_user {
        let user = rt
            .run_podman(&[
                "image".into(),
                "inspect".into(),
                "--format".into(),
                "{{.Config.User}}".into(),
                plan.image.clone(),
            ])
            .await;
        let checked = match user {
            Ok(u) => check_image_user(&u),
            Err(e) => Err(e),
        };
        if let Err(message) = checked {
            ctx.set_waiting(
                &plan.name,
                &plan.image,
                "CreateContainerConfigError",
                &message,
            );
            return;
        }
    }
    let image_id = rt
        .run_podman(&[
            "image".into(),
            "inspect".into(),
            "--format".into(),
            "{{.Id}}".into(),
            plan.image.clone(),
        ])
        .await
        .map(|id| format!("sha256:{id}"))
        .unwrap_or_default();
    let mut restart: u32 = 0;
    let mut backoff = BACKOFF_START;
    loop {
        if stop.borrow().is_some() {
            return;
        }
        let cname = format!(
            "k8s_{}_{}_{}_{}_{restart}",
            plan.name, ctx.name, ctx.ns, ctx.uid
        );
        let log = ctx.log_path(&plan.name, restart);
        let _ = rt
            .run_podman(&["rm".into(), "--force".into(), cname.clone()])
            .await;
        let container_id = match rt.run_podman(&plan.run_args(&cname, &log)).await {
            Ok(id) => id,
            Err(message) => {
                let missing =
                    message.contains("image not known") || message.contains("no such image");
                let reason = match (missing, plan.pull_policy.as_str()) {
                    (true, "Never") => "ErrImageNeverPull",
                    (true, _) => "ErrImagePull",
                    (false, _) => "CreateContainerError",
                };
                tracing::warn!(ns = %ctx.ns, pod = %ctx.name, container = %plan.name, %message, "container did not start");
                ctx.set_waiting(&plan.name, &plan.image, reason, &message);
                return;
            }
        };
        let started_at = now_rfc3339();
        {
            let (image, image_id, id, started) = (
                plan.image.clone(),
                image_id.clone(),
                container_id.clone(),
                started_at.clone(),
            );
            ctx.update_container(&plan.name, |c| {
                c["image"] = json!(image);
                c["imageID"] = json!(image_id);
                c["containerID"] = json!(format!("podman://{id}"));
                c["state"] = json!({"running": {"startedAt": started}});
                c["ready"] = json!(true);
                c["started"] = json!(true);
            });
        }
        tracing::info!(ns = %ctx.ns, pod = %ctx.name, container = %plan.name, id = %container_id, "container started");
        let code = wait(rt, &cname, &mut stop).await;
        let exit = Exit {
            code,
            started_at,
            finished_at: now_rfc3339(),
            container_id,
        };
        let message = termination_message(ctx, plan, &log, exit.code).await;
        let _ = rt
            .run_podman(&["rm".into(), "--force".into(), cname.clone()])
            .await;
        tracing::info!(ns = %ctx.ns, pod = %ctx.name, container = %plan.name, exit_code = exit.code, "container exited");
        let stopping = stop.borrow().is_some();
        let restarts = !stopping
            && match ctx.restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => exit.code != 0,
                _ => true,
            };
        let terminated = {
            let reason = if exit.code == 0 { "Completed" } else { "Error" };
            let mut t = json!({
                "exitCode": exit.code,
                "reason": reason,
                "startedAt": exit.started_at,
                "finishedAt": exit.finished_at,
                "containerID": format!("podman://{}", exit.container_id),
            });
            if !message.is_empty() {
                t["message"] = json!(message);
            }
            t
        };
        if !restarts {
            ctx.update_container(&plan.name, |c| {
                c["state"] = json!({"terminated": terminated});
                c["ready"] = json!(false);
                c["started"] = json!(false);
            });
            return;
        }
        let wait_message = format!(
            "back-off {}s restarting failed container={} pod={}_{}({})",
            backoff.as_secs(),
            plan.name,
            ctx.name,
            ctx.ns,
            ctx.uid
        );
        ctx.update_container(&plan.name, |c| {
            c["lastState"] = json!({"terminated": terminated});
            c["state"] =
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": wait_message}});
            c["ready"] = json!(false);
            c["started"] = json!(false);
            c["restartCount"] = json!(c["restartCount"].as_i64().unwrap_or(0) + 1);
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(Option::is_some) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        restart += 1;
        if let Err(e) = reset_termination_file(&termination_file(&ctx.dir, &plan.name)).await {
            ctx.set_waiting(&plan.name, &plan.image, "CreateContainerConfigError", &e);
            return;
        }
    }
}

/// Waits for the container to exit, stopping it (SIGTERM, SIGKILL after the grace period)
/// when asked to; its exit code.
async fn wait(rt: &Arc<Runtime>, cname: &str, stop: &mut watch::Receiver<Option<i64>>) -> i64 {
    let wait_args = ["wait".to_string(), cname.to_string()];
    let waiter = rt.run_podman(&wait_args);
    tokio::pin!(waiter);
    let mut stopping: Option<i64> = None;
    let mut open = true;
    let result = loop {
        if let Some(grace) = *stop.borrow_and_update()
            && stopping.is_none_or(|g| grace < g)
        {
            stopping = Some(grace);
            let rt = rt.clone();
            let args = vec![
                "stop".into(),
                "--time".into(),
                grace.to_string(),
                cname.to_string(),
            ];
            tokio::spawn(async move {
                if let Err(e) = rt.run_podman(&args).await {
                    tracing::debug!(error = %e, "podman stop");
                }
            });
        }
        if !open {
            break (&mut waiter).await;
        }
        tokio::select! {
            r = &mut waiter => break r,
            changed = stop.changed() => open = changed.is_ok(),
        }
    };
    match result {
        Ok(out) => out
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(-1),
        Err(e) => {
            tracing::warn!(container = cname, error = %e, "podman wait failed");
            -1
        }
    }
}

/// The termination message: the file, else (FallbackToLogsOnError, failed) the log's tail.
async fn termination_message(ctx: &PodCtx, plan: &ContainerPlan, log: &Path, code: i64) -> String {
    let file = tokio::fs::read(termination_file(&ctx.dir, &plan.name))
        .await
        .unwrap_or_default();
    let message = truncate(String::from_utf8_lossy(&file).into_owned(), MESSAGE_LIMIT);
    if !message.is_empty() || !plan.fallback_to_logs || code == 0 {
        return message;
    }
    let raw = tokio::fs::read(log).await.unwrap_or_default();
    log_tail(&log_text(&String::from_utf8_lossy(&raw)))
}

#[cfg(test)]
mod tests;
