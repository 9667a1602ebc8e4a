use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::*;

fn pod(spec: Value) -> Value {
    json!({
        "metadata": {"name": "train-1", "namespace": "ml", "uid": "u-1",
                     "labels": {"multitask.dev/job": "train"}},
        "spec": spec,
    })
}

fn trainer_pod() -> Value {
    pod(json!({
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
        "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        "containers": [{
            "name": "trainer", "image": "mtl-trainer:local", "imagePullPolicy": "IfNotPresent",
            "args": ["train", "--job-json", "{\"a\": 1}"],
            "env": [
                {"name": "HOME", "value": "/scratch"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "JOB", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['multitask.dev/job']"}}}
            ],
            "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"},
                             {"name": "tmp", "mountPath": "/tmp", "subPath": "t", "readOnly": true}],
            "terminationMessagePolicy": "FallbackToLogsOnError"
        }]
    }))
}

fn pairs(args: &[String], flag: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .collect()
}

#[test]
fn the_trainer_pod_becomes_podman_run_arguments() {
    let extra = BTreeMap::from([
        (
            "STORAGE_EMULATOR_HOST".to_string(),
            "http://127.0.0.1:9".to_string(),
        ),
        ("HOME".to_string(), "/overridden".to_string()),
    ]);
    let plans = plan_pod(&trainer_pod(), Path::new("/r/pods/u-1"), &extra).unwrap();
    assert_eq!(plans.len(), 1);
    let p = &plans[0];
    assert!(p.fallback_to_logs);
    assert!(
        !p.check_image_user,
        "runAsUser is set, the image's user is not checked"
    );
    assert_eq!(p.termination_message_path, "/dev/termination-log");
    let args = p.run_args("k8s_trainer", Path::new("/r/logs/x.log"));
    assert_eq!(&args[..4], ["run", "--detach", "--name", "k8s_trainer"]);
    assert_eq!(pairs(&args, "--log-opt"), ["path=/r/logs/x.log"]);
    assert_eq!(pairs(&args, "--network"), ["host"]);
    assert_eq!(pairs(&args, "--pull"), ["never"]);
    assert_eq!(pairs(&args, "--hostname"), ["train-1"]);
    assert_eq!(pairs(&args, "--user"), ["1000:1000"]);
    assert_eq!(pairs(&args, "--group-add"), ["1000"]);
    assert_eq!(pairs(&args, "--cap-drop"), ["ALL"]);
    assert_eq!(pairs(&args, "--security-opt"), ["no-new-privileges"]);
    assert!(args.contains(&"--read-only".to_string()));
    assert!(args.contains(&"--read-only-tmpfs=false".to_string()));
    // The pod's env wins over the extra env; fieldRefs resolve to the pod's fields.
    assert_eq!(
        pairs(&args, "--env"),
        [
            "STORAGE_EMULATOR_HOST=http://127.0.0.1:9",
            "HOME=/scratch",
            "POD=train-1",
            "JOB=train"
        ]
    );
    assert_eq!(
        pairs(&args, "--volume"),
        [
            "/r/pods/u-1/volumes/scratch:/scratch",
            "/r/pods/u-1/volumes/tmp/t:/tmp:ro",
            "/r/pods/u-1/termination/trainer:/dev/termination-log"
        ]
    );
    assert!(pairs(&args, "--label").contains(&"io.kubernetes.pod.uid=u-1".to_string()));
    // No command: the image's entrypoint, then the args.
    assert!(!args.contains(&"--entrypoint".to_string()));
    let image_at = args.iter().position(|a| a == "mtl-trainer:local").unwrap();
    assert_eq!(&args[image_at + 1..], ["train", "--job-json", "{\"a\": 1}"]);
}

#[test]
fn command_replaces_the_entrypoint() {
    let p = pod(
        json!({"containers": [{"name": "c", "image": "img", "command": ["sh", "-c"], "args": ["exit 3"],
                                        "terminationMessagePath": "/tmp/msg"}]}),
    );
    let plans = plan_pod(&p, Path::new("/d"), &BTreeMap::new()).unwrap();
    let args = plans[0].run_args("n", Path::new("/l"));
    assert_eq!(pairs(&args, "--entrypoint"), [r#"["sh","-c"]"#]);
    assert_eq!(&args[args.len() - 2..], ["img", "exit 3"]);
    assert_eq!(pairs(&args, "--volume"), ["/d/termination/c:/tmp/msg"]);
    assert!(pairs(&args, "--user").is_empty());
    assert!(!plans[0].fallback_to_logs);
}

#[test]
fn what_the_podman_kubelet_cannot_run_is_a_config_error_naming_it() {
    let no_image = pod(json!({"containers": [{"name": "c"}]}));
    assert_eq!(
        plan_pod(&no_image, Path::new("/d"), &BTreeMap::new()).unwrap_err(),
        "container c: no image"
    );
    let host_path = pod(
        json!({"volumes": [{"name": "data", "hostPath": {"path": "/data"}}],
        "containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}),
    );
    let e = plan_pod(&host_path, Path::new("/d"), &BTreeMap::new()).unwrap_err();
    assert!(
        e.contains("volume \"data\" is not an emptyDir volume"),
        "{e}"
    );
    let secret = pod(json!({"containers": [{"name": "c", "image": "i",
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}));
    let e = plan_pod(&secret, Path::new("/d"), &BTreeMap::new()).unwrap_err();
    assert!(e.contains("env TOKEN"), "{e}");
    let root = pod(json!({"securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "c", "image": "i", "securityContext": {"runAsUser": 0}}]}));
    let e = plan_pod(&root, Path::new("/d"), &BTreeMap::new()).unwrap_err();
    assert!(e.contains("runAsUser breaks non-root policy"), "{e}");
    let escape = pod(json!({"volumes": [{"name": "v", "emptyDir": {}}],
        "containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "../x"}]}]}));
    assert!(plan_pod(&escape, Path::new("/d"), &BTreeMap::new()).is_err());
}

#[test]
fn run_as_non_root_without_a_user_checks_the_image() {
    let p = pod(json!({"securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "c", "image": "i"}]}));
    assert!(plan_pod(&p, Path::new("/d"), &BTreeMap::new()).unwrap()[0].check_image_user);
    assert!(check_image_user("1000:1000").is_ok());
    assert_eq!(
        check_image_user("").unwrap_err(),
        "container has runAsNonRoot and image will run as root"
    );
    assert!(check_image_user("0").is_err());
    assert!(
        check_image_user("mtl")
            .unwrap_err()
            .contains("non-numeric user (mtl)")
    );
}

#[test]
fn logs_lose_their_k8s_file_prefixes_and_the_tail_is_bounded() {
    let raw = "2026-01-01T00:00:00.000000000+00:00 stdout F hello world\n\
               2026-01-01T00:00:00.100000000+00:00 stderr P part \n\
               2026-01-01T00:00:00.200000000+00:00 stderr F one\n";
    assert_eq!(log_text(raw), "hello world\npart one\n");
    let long: String = (0..200).map(|i| format!("line {i}\n")).collect();
    let tail = log_tail(&long);
    assert!(tail.ends_with("line 199"));
    assert!(tail.starts_with("line 120"), "the last 80 lines: {tail}");
    let wide = "x".repeat(5000);
    assert_eq!(log_tail(&wide).len(), 2048);
    assert_eq!(
        truncate("é".repeat(3000), MESSAGE_LIMIT).len(),
        MESSAGE_LIMIT
    );
}

#[test]
fn the_phase_follows_the_containers() {
    let running = json!({"name": "a", "state": {"running": {}}, "restartCount": 0});
    let waiting = json!({"name": "b", "state": {"waiting": {"reason": "ContainerCreating"}}, "restartCount": 0});
    let ok = json!({"name": "b", "state": {"terminated": {"exitCode": 0}}, "restartCount": 0});
    let failed =
        json!({"name": "a", "state": {"terminated": {"exitCode": 143}}, "restartCount": 0});
    let backoff = json!({"name": "b", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 1});
    assert_eq!(phase_of(&[running.clone(), waiting], 2), ("Pending", false));
    assert_eq!(
        phase_of(std::slice::from_ref(&running), 1),
        ("Running", true)
    );
    assert_eq!(
        phase_of(&[running.clone(), ok.clone()], 2),
        ("Running", false)
    );
    assert_eq!(phase_of(&[running, backoff], 2), ("Running", false));
    assert_eq!(phase_of(std::slice::from_ref(&ok), 1), ("Succeeded", false));
    assert_eq!(phase_of(&[failed, ok], 2), ("Failed", false));
}

#[test]
fn a_shorter_grace_period_replaces_a_longer_one() {
    let (tx, rx) = watch::channel(None);
    request_stop(&tx, 30);
    assert_eq!(*rx.borrow(), Some(30));
    request_stop(&tx, 60);
    assert_eq!(*rx.borrow(), Some(30));
    request_stop(&tx, 0);
    assert_eq!(*rx.borrow(), Some(0));
}
