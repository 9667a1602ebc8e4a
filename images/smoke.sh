#!/usr/bin/env bash
# Smoke tests of the built images (part of `make image-test`):
#   trainer   `mtl-trainer --help` as uid 1000 with a read-only root filesystem and no
#             capabilities (the pod's security context); the image's user, entrypoint and
#             CUDA environment; every shared library resolves
#   local     `make docker-local-train` trains the bundled job on CPU in the image and prints
#             the metrics (into a fresh output directory)
#   operator  the operator image starts as its nonroot user (65532), serves /healthz and
#             /readyz, and reaches kube-standin: it takes the leader lease and lists jobs;
#             it stops cleanly on SIGTERM
#   images/smoke.sh [trainer] [local] [operator]     default: all three
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. images/env.sh
tag="${MTL_IMAGE_TAG:-local}"
trainer="localhost/mtl-trainer:$tag"
operator="localhost/mtl-operator:$tag"
passed=0
failed=0
work="$(mktemp -d)"
cleanup() {
    for c in $(podman ps -aq --filter "label=dev.mtl.smoke=$$"); do podman rm -f "$c" >/dev/null; done
    [ -n "${standin_pid:-}" ] && kill "$standin_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
check() { # check NAME COMMAND...: runs one assertion, reports it
    local label=$1; shift
    if "$@" >"$work/check.log" 2>&1; then
        echo "ok   $label"; passed=$((passed + 1))
    else
        echo "FAIL $label"; sed 's/^/     /' "$work/check.log" | tail -30; failed=$((failed + 1))
    fi
}
contains() { grep -qF -- "$2" <<<"$1" || { echo "expected to find: $2"; echo "in: $1"; return 1; }; }
# Polls COMMAND until it succeeds, for at most $1 seconds (bounded; no fixed sleeps).
until_ok() {
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

trainer_tests() {
    help_locked_down() {
        local out
        out=$(podman run --rm --label "dev.mtl.smoke=$$" --user 1000:1000 --read-only \
            --read-only-tmpfs=false --cap-drop ALL --security-opt no-new-privileges \
            --network none "$trainer" --help)
        contains "$out" "Multi-task fine-tuning of a shared encoder"
        contains "$out" "train"
    }
    check "trainer: --help as uid 1000, read-only root, no capabilities" help_locked_down
    image_config() {
        local cfg
        cfg=$(podman image inspect --format '{{.Config.User}} {{json .Config.Entrypoint}} {{range .Config.Env}}{{.}} {{end}}' "$trainer")
        contains "$cfg" '1000:1000 ["mtl-trainer"]'
        contains "$cfg" "NVIDIA_VISIBLE_DEVICES=all"
        contains "$cfg" "NVIDIA_DRIVER_CAPABILITIES=compute,utility"
        contains "$cfg" "LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64"
    }
    check "trainer: user 1000, entrypoint mtl-trainer, the CUDA image's environment" image_config
    libraries_resolve() {
        local out
        out=$(podman run --rm --label "dev.mtl.smoke=$$" --entrypoint ldd "$trainer" /usr/local/bin/mtl-trainer)
        contains "$out" "/opt/libtorch/lib/libtorch_cuda.so"
        contains "$out" "/opt/nvidia/cu13/lib/libcudart.so.13"
        ! grep -q "not found" <<<"$out"
    }
    check "trainer: libtorch_cuda and the CUDA runtime resolve from /opt" libraries_resolve
}

local_train_tests() {
    local_train() {
        local out="$PWD/out/image-test-local-train"
        rm -rf "$out"
        MTL_IMAGE_TAG="$tag" images/local-train.sh --output "$out" >"$work/summary.json"
        python3 - "$work/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(json.dumps(s["metrics"], indent=1))
assert s["step"] == s["total_steps"] and not s["interrupted"], s
for m in ("stsb/pearson", "rte/accuracy", "csqa/accuracy", "mean"):
    assert m in s["metrics"], m
assert s["metrics"]["mean"] > 0.5, "the bundled job learns (chance is far below)"
EOF
        rm -rf "$out"
    }
    check "make docker-local-train: the bundled job trains in the image and prints metrics" local_train
    cat "$work/summary.json" 2>/dev/null || true
}

operator_tests() {
    cargo build -q -p kube-standin --bin kube-standin
    target/debug/kube-standin --kubeconfig "$work/kubeconfig" >"$work/standin.url" 2>"$work/standin.log" &
    standin_pid=$!
    until_ok 60 test -s "$work/standin.url" || { echo "kube-standin did not start"; cat "$work/standin.log"; exit 1; }
    local api port ctr
    api=$(head -1 "$work/standin.url")
    # The CRD, installed as a user does (the operator exits when its resource is not served).
    kubectl --kubeconfig "$work/kubeconfig" apply -f crds/multitasktrainingjobs.yaml >/dev/null
    kubectl --kubeconfig "$work/kubeconfig" wait --for condition=established --timeout 60s \
        crd/multitasktrainingjobs.multitask.dev >/dev/null
    port=$(free_port)
    ctr="mtl-smoke-operator-$$"
    podman run -d --name "$ctr" --label "dev.mtl.smoke=$$" --network host \
        -v "$work/kubeconfig:/kubeconfig:ro" -e KUBECONFIG=/kubeconfig "$operator" \
        run --namespace default --lease-namespace default --identity smoke \
        --metrics-addr "127.0.0.1:$port" >/dev/null
    healthz() { curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null; }
    check "operator: serves /healthz" until_ok 60 healthz
    leader() { curl -fsS "$api/apis/coordination.k8s.io/v1/namespaces/default/leases/mtl-operator" | grep -q '"holderIdentity":"smoke"'; }
    check "operator: reaches kube-standin and holds the leader lease" until_ok 60 leader
    readyz() { curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null; }
    check "operator: ready (/readyz) once leading" until_ok 60 readyz
    lists_jobs() { curl -fsS "$api/standin/stats" | grep -q multitasktrainingjobs; }
    check "operator: lists and watches MultiTaskTrainingJobs" until_ok 60 lists_jobs
    runs_as_nonroot() {
        local pid
        pid=$(podman inspect --format '{{.State.Pid}}' "$ctr")
        [ "$(stat -c %u:%g "/proc/$pid")" = "65532:65532" ] || { stat -c %u:%g "/proc/$pid"; return 1; }
    }
    check "operator: runs as nonroot (65532:65532)" runs_as_nonroot
    stops_cleanly() {
        podman stop --time 30 "$ctr" >/dev/null
        [ "$(podman inspect --format '{{.State.ExitCode}}' "$ctr")" = 0 ]
    }
    check "operator: exits 0 on SIGTERM" stops_cleanly
    podman logs "$ctr" 2>&1 | tail -3
}

for what in "${@:-trainer local operator}"; do
    for w in $what; do
        case "$w" in
            trainer) trainer_tests ;;
            local) local_train_tests ;;
            operator) operator_tests ;;
            *) echo "unknown smoke test group $w" >&2; exit 2 ;;
        esac
    done
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
