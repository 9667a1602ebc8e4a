#!/usr/bin/env python3
"""Check the mtl-operator Helm chart without a helm binary.

    python charts/check_chart.py                  # check charts/mtl-operator
    python charts/check_chart.py --render         # also print the manifests rendered from the defaults
    python charts/check_chart.py --chart DIR --crds DIR

What it checks (exit status 1 and one line per problem, naming the file, when any fails):
  * Chart.yaml: apiVersion v2, name equal to the directory name, semver version, appVersion.
  * values.yaml parses, and every key at the top two levels has a comment (documented values).
  * every `.Values.a.b` path a template mentions exists in values.yaml, and every key of
    values.yaml is read by some template (no dead, undocumented-by-use settings).
  * templates render with a small Go-template renderer (the subset this chart uses: define/include,
    if/else/with/range/end, variables, pipelines, Sprig's default, quote, toYaml, nindent, join,
    dig, b64enc, sha256sum, randAlphaNum (deterministic here), gt/lt/ge/le (numbers of one kind,
    as Go's), ..., and Helm's lookup, which finds nothing, as under `helm template`),
    under several sets of values (defaults, every toggle switched on, one replica, ...); each rendered
    document parses as YAML with apiVersion, kind, metadata.name and the app.kubernetes.io labels.
  * NOTES.txt renders (no <no value>) and says how to upgrade the CRDs, which Helm installs on first
    install only: `kubectl apply --server-side --force-conflicts -f charts/<chart>/crds/` (or each
    file; with podSecurity.extraVolumeTypes, the job CRD generated with that list instead).
  * cross-object wiring: selectors match pod labels, Service/ServiceMonitor/probe port names exist,
    the Deployment runs `run --metrics-addr 0.0.0.0:<metrics.port>` with the downward-API env,
    restricted security contexts, bindings point at rendered roles and the operator's ServiceAccount.
  * PodDisruptionBudget (policy/v1): rendered exactly when podDisruptionBudget.enabled and
    replicas > 1 (with one replica, minAvailable 1 would block node drains forever); its selector
    selects the Deployment's pods and no others (the Deployment's selector labels); minAvailable is
    podDisruptionBudget.minAvailable, a whole number from 1 to replicas - 1.
  * operator settings: the values' policy (only MultiTaskTrainingPolicy spec fields, of the right
    types) is the ConfigMap <fullname>-policy's policy.yaml, mounted read-only where
    --policy-file points, with a checksum/policy pod annotation of it; the accepted-spec key
    Secret (<fullname>-accepted-spec-key, non-empty `key` of at least 16 bytes, kept on uninstall;
    none when acceptedSpecKey.existingSecret names one) mounted read-only where
    --accepted-spec-key-file points; --allow-volume-types is podSecurity.extraVolumeTypes; and
    none of the removed policy flags (REMOVED_FLAGS) or their MTL_ALLOWED_* env.
  * RBAC: the rules bound to the operator's ServiceAccount grant exactly REQUIRED_RBAC (below),
    and REQUIRED_RBAC_WHEN's where its value is switched on:
    everything in it, in the right scope (cluster or watchNamespace; the Lease in the release
    namespace), and nothing else (no wildcards, no extra verbs or resources).
  * aggregated roles for people (AGGREGATED_ROLES; with aggregatedRoles.enabled and rbac.create):
    mtl-view and mtl-edit exist with their aggregate-to-* labels, grant exactly their rules
    (mtl-edit: create on multitasktrainingjobs among them), no write verb on
    multitasktrainingjobs/status or multitasktrainingpolicies and no wildcard; they are bound to
    nothing (so they never count as the operator's), and no other role carries such a label.
  * every CRD in the chart's crds/ equals the generated file of the same name in the repository's
    crds/ byte for byte, and both sides hold REQUIRED_CRD_FILES.

What it does not check: the real Kubernetes schemas of the objects (use kubeconform or
`helm template | kubectl apply --dry-run=server` where those exist), Sprig functions this chart
does not use, `helm lint` style rules beyond the above, or that the operator binary accepts the
flags the Deployment passes.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import hashlib
import json
import re
import sys
from decimal import Decimal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_CHART = HERE / "mtl-operator"
DEFAULT_CRDS = HERE.parent / "crds"  # where `make crds` writes the generated CRDs
REQUIRED_CRD_FILES = ("multitasktrainingjobs.yaml", "multitasktrainingpolicies.yaml")

# What the operator does with the Kubernetes API, as operator/tests/rbac.rs derives it from the
# operator's requests over a whole job's life (that test fails when the chart's rules and the
# requests differ; this list adds the scopes). Scope "watch": cluster-wide, or the
# watchNamespace when set. Scope "release": the release namespace (leader election).
REQUIRED_RBAC: list[tuple[str, str, str, tuple[str, ...]]] = [
    # patch: Vertex AI jobs' finalizer, an older operator's released (JSON patch);
    # delete: a finished job past ttlSecondsAfterFinished.
    ("watch", "multitask.dev", "multitasktrainingjobs", ("list", "watch", "patch", "delete")),
    # server-side apply of .status.
    ("watch", "multitask.dev", "multitasktrainingjobs/status", ("patch",)),
    # ownerReferences with blockOwnerDeletion on the job's pods and Service.
    ("watch", "multitask.dev", "multitasktrainingjobs/finalizers", ("update",)),
    # the namespace's MultiTaskTrainingPolicy (named POLICY_NAME), when a job is accepted.
    ("watch", "multitask.dev", "multitasktrainingpolicies", ("get",)),
    # create; get for one that already exists (its owner is checked); list + watch: the cache.
    ("watch", "", "pods", ("get", "list", "watch", "create", "delete")),
    # create (get as for pods): the headless Service of a job with several workers.
    ("watch", "", "services", ("get", "create")),
    # kube's Recorder: events.k8s.io/v1 only; patch for a repeated event.
    ("watch", "events.k8s.io", "events", ("create", "patch")),
    # get/create/update (a resourceVersion-guarded replace) in operator/src/leader.rs.
    ("release", "coordination.k8s.io", "leases", ("get", "create", "update")),
]

# Grants needed only with a value switched on: (values path, then as REQUIRED_RBAC).
REQUIRED_RBAC_WHEN: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    # create (get as for pods): the PodGroup of each attempt of several workers.
    ("coscheduling.enabled", "watch", "scheduling.x-k8s.io", "podgroups", ("get", "create")),
]

# The one MultiTaskTrainingPolicy of a namespace the operator reads (crds/src/policy.rs): a rule
# on multitasktrainingpolicies restricted by resourceNames must name it.
POLICY_NAME = "default"

# ClusterRoles for people, aggregated into Kubernetes' user-facing roles and bound to nothing in
# the chart: name -> (the aggregate-to-* roles it joins, exactly its grants as in REQUIRED_RBAC).
AGG_LABEL = "rbac.authorization.k8s.io/aggregate-to-"
AGGREGATED_ROLES: dict[str, tuple[tuple[str, ...], list[tuple[str, str, tuple[str, ...]]]]] = {
    "mtl-view": (("view", "edit", "admin"), [
        ("multitask.dev", "multitasktrainingjobs", ("get", "list", "watch")),
        ("multitask.dev", "multitasktrainingjobs/status", ("get", "list", "watch")),
        ("multitask.dev", "multitasktrainingpolicies", ("get", "list", "watch")),
    ]),
    "mtl-edit": (("edit", "admin"), [
        ("multitask.dev", "multitasktrainingjobs", ("create", "update", "patch", "delete", "deletecollection")),
    ]),
}
# What no aggregated role may write: the operator's status (forged acceptedSpec, phases) and the
# policies (namespace editors and admins would widen their own).
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection", "*")
NO_WRITES_FOR_USERS = ("multitasktrainingjobs/status", "multitasktrainingpolicies")

# The spec of a MultiTaskTrainingPolicy, which the values' policy is: its lists of strings,
# whole numbers and vertexAI's lists, read from the generated CRD (crds/src/policy.rs is the
# source), so this cannot drift from it. The operator refuses to start on a field it does not
# know; this catches it before a deploy.
def _policy_fields() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    crd = yaml.safe_load((HERE.parent / "crds" / "multitasktrainingpolicies.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    lists = tuple(k for k, v in props.items() if v.get("type") == "array")
    numbers = tuple(k for k, v in props.items() if v.get("type") == "integer")
    vertex = tuple(k for k, v in props["vertexAI"]["properties"].items() if v.get("type") == "array")
    vertex_flags = tuple(k for k, v in props["vertexAI"]["properties"].items() if v.get("type") == "boolean")
    return lists, numbers, vertex, vertex_flags


POLICY_LIST_FIELDS, POLICY_NUMBER_FIELDS, POLICY_VERTEX_FIELDS, POLICY_VERTEX_FLAGS = _policy_fields()

# Operator flags that no longer exist (the policy moved to --policy-file), and their env vars.
REMOVED_FLAGS = ("--allowed-image-prefix", "--allowed-service-account", "--allowed-vertex-project",
                 "--allowed-vertex-service-account")
REMOVED_ENV_PREFIX = "MTL_ALLOWED_"

RELEASE_NAME = "mtl"
RELEASE_NAMESPACE = "mtl-system"

# Value sets the templates are rendered with, as overlays on values.yaml. Every key an overlay
# sets must exist in values.yaml (checked), so the overlays stay in step with the chart.
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-toggles-on": {
        "image": {"tag": "1.2.3"},
        "replicas": 3,
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
        "imagePullSecrets": [{"name": "registry"}],
        "watchNamespace": "ml-jobs",
        "extraArgs": ["--some-flag"],
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
        "serviceAccount": {
            "annotations": {"iam.gke.io/gcp-service-account": "mtl@proj.iam.gserviceaccount.com"},
        },
        "metrics": {
            "serviceAnnotations": {"prometheus.io/scrape": "true"},
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        },
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            ],
            "httpsTo": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
            "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]}],
        },
        "podAnnotations": {"a": "b"},
        "podLabels": {"team": "ml"},
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "defaultTrainerImage": "us-docker.pkg.dev/proj/mtl/mtl-trainer:1.2.3",
        "coscheduling": {"enabled": True},
        "policy": {  # every field of the spec (a test checks)
            "imagePrefixes": ["us-docker.pkg.dev/proj/mtl/", "gcr.io/proj/"],
            "serviceAccounts": ["trainer"],
            "priorityClasses": ["ml-batch"],
            "schedulerNames": ["default-scheduler"],
            "tolerationKeys": ["nvidia.com/gpu", ""],
            "nodeSelectorKeys": ["cloud.google.com/gke-accelerator"],
            "persistentVolumeClaims": ["datasets"],
            "bucketPrefixes": ["gs://proj-ml/"],
            "workloadPriorityClasses": ["batch-low"],
            "gpuTypes": ["nvidia-l4"],
            "maxGpusPerWorker": 8,
            "maxWorkers": 4,
            "maxGpusPerJob": 1000000,  # 1e+06 as a Helm float64 printed with %v
            "vertexAI": {
                "projects": ["proj"],
                "serviceAccounts": ["trainer@proj.iam.gserviceaccount.com"],
                "machineTypes": ["a2-highgpu-1g"],
                "acceleratorTypes": ["NVIDIA_TESLA_A100"],
                "networks": ["projects/123/global/networks/ml"],
                "allowWebAccess": False,
            },
        },
        "podSecurity": {"extraVolumeTypes": ["nfs", "hostPath"]},
    },
    "existing-sa-digest-override": {
        "fullnameOverride": "ops",
        "nameOverride": "mtlop",
        "image": {"digest": "sha256:" + "0" * 64},
        "serviceAccount": {"create": False, "name": "mtl-preexisting"},
        "networkPolicy": {"enabled": True, "allowMetadataServer": False},
        "acceptedSpecKey": {"existingSecret": "mtl-accepted-spec-key"},
        "aggregatedRoles": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
        # [] allows nothing: it must reach the policy file as [], not vanish.
        "policy": {"serviceAccounts": [], "vertexAI": {"projects": []}},
    },
    "no-rbac": {"rbac": {"create": False}},
    # One replica: no PodDisruptionBudget although podDisruptionBudget.enabled is true.
    "single-replica": {"replicas": 1},
}

NAMESPACED_KINDS = {
    "Deployment", "ServiceAccount", "Service", "Role", "RoleBinding", "ServiceMonitor",
    "NetworkPolicy", "ConfigMap", "Secret", "PodDisruptionBudget",
}
REQUIRED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by")


class CheckError(Exception):
    """A problem in the chart, with the file it was found in."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


# ---------------------------------------------------------------------------------------------
# A Go text/template subset renderer (the constructs Helm charts like this one use).
# ---------------------------------------------------------------------------------------------


class RenderError(Exception):
    pass


class Tracked:
    """Mixin: a dict or list from values.yaml that knows its path (e.g. "metrics.serviceMonitor")."""

    path: str


class TDict(dict, Tracked):
    pass


class TList(list, Tracked):
    pass


def track(value: Any, path: str) -> Any:
    """Values as Helm sees them: maps and lists that know their path, numbers as float64."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # Helm reads values.yaml through JSON: every number is a float64
    if isinstance(value, dict):
        d = TDict({k: track(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()})
        d.path = path
        return d
    if isinstance(value, list):
        lst = TList(track(v, f"{path}[{i}]") for i, v in enumerate(value))
        lst.path = path
        return lst
    return value


def untrack(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: untrack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untrack(v) for v in value]
    return value


@dataclass
class Usage:
    """Which values paths rendering read: exactly (a field lookup) or wholesale (toYaml, range)."""

    exact: set[str] = field(default_factory=set)
    whole: set[str] = field(default_factory=set)


NOVAL = object()  # no piped value


# --- lexing ----------------------------------------------------------------------------------


@dataclass
class Tok:
    kind: str  # "text" or "action"
    value: str
    line: int


def lex(src: str) -> list[Tok]:
    toks: list[Tok] = []
    pos = 0
    n = len(src)
    trim_next = False
    while pos <= n:
        i = src.find("{{", pos)
        text = src[pos:] if i < 0 else src[pos:i]
        if trim_next:
            text = text.lstrip(" \t\r\n")
            trim_next = False
        if i < 0:
            toks.append(Tok("text", text, src.count("\n", 0, pos) + 1))
            break
        line = src.count("\n", 0, i) + 1
        trim_left = src.startswith("{{-", i) and i + 3 < n and src[i + 3] in " \t\r\n"
        if trim_left:
            text = text.rstrip(" \t\r\n")
        toks.append(Tok("text", text, line))
        start = i + 3 if trim_left else i + 2
        j = start
        quote = None
        while j < n:
            c = src[j]
            if quote:
                if c == "\\" and quote == '"':
                    j += 2
                    continue
                if c == quote:
                    quote = None
            elif c in "\"`":
                quote = c
            elif src.startswith("}}", j):
                break
            j += 1
        else:
            raise RenderError(f"line {line}: unclosed action {{{{")
        body = src[start:j]
        if len(body) >= 2 and body[-1] == "-" and body[-2] in " \t\r\n":
            body = body[:-1]
            trim_next = True
        body = body.strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            toks.append(Tok("action", body, line))
        pos = j + 2
    return toks


TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<op>:=|[()|,=])
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.X,
)


def tokenize_expr(expr: str, line: int) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(expr):
        m = TOKEN_RE.match(expr, pos)
        if not m:
            raise RenderError(f"line {line}: cannot parse {expr[pos:]!r} in {{{{ {expr} }}}}")
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    return out


# --- parsing ---------------------------------------------------------------------------------


@dataclass
class Pipeline:
    decl: list[str]  # variables declared (:=) or assigned (=)
    cmds: list[list[Any]]  # each command: a list of operands
    line: int


@dataclass
class Operand:
    kind: str  # lit, field, var, func, pipe
    value: Any


@dataclass
class Node:
    kind: str  # text, action, if, with, range, define
    line: int
    text: str = ""
    pipe: Pipeline | None = None
    branches: list[tuple[Pipeline | None, list["Node"]]] = field(default_factory=list)
    body: list["Node"] = field(default_factory=list)
    else_body: list["Node"] = field(default_factory=list)
    name: str = ""


def parse_pipeline(toks: list[tuple[str, str]], line: int) -> Pipeline:
    decl: list[str] = []
    i = 0
    # `$x :=`, `$x =`, `$i, $v :=`
    j = 0
    names = []
    while j < len(toks) and toks[j][0] == "var":
        names.append(toks[j][1])
        if j + 1 < len(toks) and toks[j + 1] == ("op", ","):
            j += 2
            continue
        break
    if names and j + 1 < len(toks) and toks[j + 1][0] == "op" and toks[j + 1][1] in (":=", "="):
        decl = names
        i = j + 2

    def parse_cmds(i: int, stop_at_paren: bool) -> tuple[list[list[Operand]], int]:
        cmds: list[list[Operand]] = [[]]
        while i < len(toks):
            kind, val = toks[i]
            if kind == "op" and val == ")":
                if stop_at_paren:
                    return cmds, i + 1
                raise RenderError(f"line {line}: unexpected )")
            if kind == "op" and val == "|":
                if not cmds[-1]:
                    raise RenderError(f"line {line}: empty command before |")
                cmds.append([])
                i += 1
                continue
            if kind == "op" and val == "(":
                sub, i = parse_cmds(i + 1, True)
                cmds[-1].append(Operand("pipe", Pipeline([], sub, line)))
                continue
            if kind == "str":
                cmds[-1].append(Operand("lit", json.loads(val)))
            elif kind == "raw":
                cmds[-1].append(Operand("lit", val[1:-1]))
            elif kind == "num":
                cmds[-1].append(Operand("lit", float(val) if "." in val else int(val)))
            elif kind == "ident" and val in ("true", "false"):
                cmds[-1].append(Operand("lit", val == "true"))
            elif kind == "ident" and val == "nil":
                cmds[-1].append(Operand("lit", None))
            elif kind == "ident":
                cmds[-1].append(Operand("func", val))
            elif kind == "field":
                cmds[-1].append(Operand("field", val[1:].split(".")))
            elif kind == "dot":
                cmds[-1].append(Operand("field", []))
            elif kind == "var":
                name, *parts = val.split(".")
                cmds[-1].append(Operand("var", (name, parts)))
            else:
                raise RenderError(f"line {line}: unexpected {val!r}")
            i += 1
        if stop_at_paren:
            raise RenderError(f"line {line}: unclosed (")
        return cmds, i

    cmds, _ = parse_cmds(i, False)
    if not cmds[-1]:
        raise RenderError(f"line {line}: empty pipeline")
    return Pipeline(decl, cmds, line)


BLOCK_KEYWORDS = ("if", "with", "range", "define", "else", "end", "template", "block")


def parse(src: str) -> list[Node]:
    toks = lex(src)
    pos = 0

    def parse_list(enders: tuple[str, ...], opener: str = "", opened_at: int = 0) -> tuple[list[Node], str, Tok | None]:
        nonlocal pos
        nodes: list[Node] = []
        while pos < len(toks):
            tok = toks[pos]
            pos += 1
            if tok.kind == "text":
                if tok.value:
                    nodes.append(Node("text", tok.line, text=tok.value))
                continue
            word = tok.value.split(None, 1)[0] if tok.value else ""
            rest = tok.value[len(word):].strip()
            if word in ("end", "else"):
                if word not in enders:
                    raise RenderError(f"line {tok.line}: unexpected {{{{ {word} }}}}")
                return nodes, word, tok
            if word in ("if", "with", "range"):
                nodes.append(parse_block(word, rest, tok.line))
            elif word == "define":
                name = json.loads(rest)
                body, ender, _ = parse_list(("end",), f"define {rest}", tok.line)
                nodes.append(Node("define", tok.line, name=name, body=body))
            elif word in ("template", "block"):
                raise RenderError(f"line {tok.line}: {{{{ {word} }}}} is not supported; use include")
            else:
                nodes.append(Node("action", tok.line, pipe=parse_pipeline(tokenize_expr(tok.value, tok.line), tok.line)))
        if enders:
            raise RenderError(f"line {opened_at}: {{{{ {opener} }}}} has no {{{{ end }}}}")
        return nodes, "", None

    def parse_block(word: str, rest: str, line: int) -> Node:
        node = Node(word, line)
        cond = parse_pipeline(tokenize_expr(rest, line), line)
        while True:
            body, ender, tok = parse_list(("else", "end"), f"{word} {rest}", line)
            node.branches.append((cond, body))
            if ender == "end":
                return node
            assert tok is not None
            else_rest = tok.value[len("else"):].strip()
            if word == "if" and else_rest.startswith("if "):
                cond = parse_pipeline(tokenize_expr(else_rest[3:], tok.line), tok.line)
                continue
            if else_rest:
                raise RenderError(f"line {tok.line}: unsupported {{{{ {tok.value} }}}}")
            node.else_body, ender, _ = parse_list(("end",), f"{word} {rest}", line)
            return node

    nodes, _, _ = parse_list(())
    return nodes


# --- evaluation ------------------------------------------------------------------------------


def truthy(v: Any) -> bool:
    if v is None or v is NOVAL:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (str, list, dict, tuple)):
        return len(v) > 0
    return True


def go_str(v: Any) -> str:
    if v is None or v is NOVAL:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, (dict, list)):
        raise RenderError(f"a map or list is printed as text ({untrack(v)!r}); use toYaml")
    return str(v)


def go_float(f: float) -> str:
    """Go's %v of a float64 (strconv 'g', shortest): 300 -> "300", 1000000 -> "1e+06"."""
    if f != f or f in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(f)]
    if f == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(f)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    exp = len(ds) + int(exponent) - 1  # decimal exponent of the first digit
    neg = "-" if sign else ""
    if exp < -4 or exp >= 6:  # strconv: shortest precision decides with eprec = 6
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if exp < 0:
        return f"{neg}0.{'0' * (-exp - 1)}{ds}"
    if len(ds) <= exp + 1:
        return f"{neg}{ds}{'0' * (exp + 1 - len(ds))}"
    return f"{neg}{ds[:exp + 1]}.{ds[exp + 1:]}"


def json_numbers(v: Any) -> Any:
    """As sigs.k8s.io/yaml writes values: through JSON, so a float64 1.0 comes out as 1."""
    if isinstance(v, dict):
        return {k: json_numbers(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_numbers(x) for x in v]
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return int(v)
    return v


def to_yaml(v: Any) -> str:
    if v is None:
        return "null"
    return yaml.safe_dump(json_numbers(untrack(v)), default_flow_style=False, sort_keys=True, width=10_000).rstrip("\n")


def go_printf(fmt: str, *args: Any) -> str:
    out = []
    it = iter(args)
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        verb = fmt[i + 1] if i + 1 < len(fmt) else ""
        i += 2
        if verb == "%":
            out.append("%")
            continue
        try:
            arg = next(it)
        except StopIteration:
            raise RenderError(f"printf {fmt!r}: not enough arguments") from None
        if verb in ("s", "v"):
            out.append(go_str(arg))
        elif verb == "d":
            if not isinstance(arg, int) or isinstance(arg, bool):
                raise RenderError(f"printf %d of {go_str(arg)} (values are float64 in Helm: use %v or int)")
            out.append(str(arg))
        elif verb == "q":
            out.append(json.dumps(go_str(arg)))
        else:
            raise RenderError(f"printf verb %{verb} is not supported")
    return "".join(out)


class Renderer:
    def __init__(self, templates: dict[str, str]):
        """templates: file name -> source. Defines from every file are visible everywhere."""
        self.trees: dict[str, list[Node]] = {}
        self.defines: dict[str, list[Node]] = {}
        self.syntax_errors: list[CheckError] = []
        for name, src in templates.items():
            try:
                tree = parse(src)
            except RenderError as e:
                self.syntax_errors.append(CheckError(name, f"template syntax: {e}"))
                continue
            self.trees[name] = tree
            for node in tree:
                if node.kind == "define":
                    self.defines[node.name] = node.body
        self.usage = Usage()
        self.current = ""

    def render(self, name: str, root: dict[str, Any]) -> str:
        self.current = name
        out: list[str] = []
        try:
            self.exec_list(self.trees[name], root, {"$": root}, out)
        except RenderError as e:
            raise CheckError(name, f"render: {e}") from None
        return "".join(out)

    # statements

    def exec_list(self, nodes: list[Node], dot: Any, vars: dict[str, Any], out: list[str]) -> None:
        for node in nodes:
            self.exec_node(node, dot, vars, out)

    def exec_node(self, node: Node, dot: Any, vars: dict[str, Any], out: list[str]) -> None:
        try:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "define":
                pass
            elif node.kind == "action":
                assert node.pipe is not None
                v = self.eval_pipe(node.pipe, dot, vars)
                if not node.pipe.decl:
                    self.mark_whole(v)
                    out.append(go_str(v))
            elif node.kind == "if":
                for cond, body in node.branches:
                    assert cond is not None
                    if truthy(self.eval_pipe(cond, dot, vars)):
                        self.exec_list(body, dot, dict(vars), out)
                        return
                self.exec_list(node.else_body, dot, dict(vars), out)
            elif node.kind == "with":
                cond, body = node.branches[0]
                assert cond is not None
                v = self.eval_pipe(cond, dot, vars)
                if truthy(v):
                    self.exec_list(body, v, dict(vars), out)
                else:
                    self.exec_list(node.else_body, dot, dict(vars), out)
            elif node.kind == "range":
                self.exec_range(node, dot, vars, out)
            else:
                raise RenderError(f"unknown node {node.kind}")
        except RenderError as e:
            msg = str(e)
            if not msg.startswith("line "):
                msg = f"line {node.line}: {msg}"
            raise RenderError(msg) from None

    def exec_range(self, node: Node, dot: Any, vars: dict[str, Any], out: list[str]) -> None:
        pipe, body = node.branches[0]
        assert pipe is not None
        names = pipe.decl
        collection = self.eval_pipe(Pipeline([], pipe.cmds, pipe.line), dot, vars)
        self.mark_whole(collection)
        if isinstance(collection, dict):
            items = [(k, collection[k]) for k in sorted(collection)]
        elif isinstance(collection, list):
            items = list(enumerate(collection))
        elif collection is None:
            items = []
        elif isinstance(collection, int):
            items = [(i, i) for i in range(collection)]
        else:
            raise RenderError(f"range over {type(collection).__name__}")
        if not items:
            self.exec_list(node.else_body, dot, dict(vars), out)
            return
        for k, v in items:
            scope = dict(vars)
            if len(names) == 1:
                scope[names[0]] = v
            elif len(names) == 2:
                scope[names[0]], scope[names[1]] = k, v
            self.exec_list(body, v, scope, out)

    # expressions

    def eval_pipe(self, pipe: Pipeline, dot: Any, vars: dict[str, Any]) -> Any:
        v: Any = NOVAL
        for cmd in pipe.cmds:
            v = self.eval_cmd(cmd, dot, vars, v)
        if pipe.decl:
            if len(pipe.decl) != 1:
                raise RenderError("multiple variables only in range")
            vars[pipe.decl[0]] = v
        return v

    def eval_cmd(self, cmd: list[Operand], dot: Any, vars: dict[str, Any], piped: Any) -> Any:
        head = cmd[0]
        if head.kind == "func":
            args = [self.eval_operand(a, dot, vars) for a in cmd[1:]]
            if piped is not NOVAL:
                args.append(piped)
            return self.call(head.value, args, dot)
        if len(cmd) > 1:
            raise RenderError("arguments given to a value that is not a function")
        if piped is not NOVAL:
            raise RenderError("a value is piped into something that is not a function")
        return self.eval_operand(head, dot, vars)

    def eval_operand(self, op: Operand, dot: Any, vars: dict[str, Any]) -> Any:
        if op.kind == "lit":
            return op.value
        if op.kind == "field":
            return self.lookup(dot, op.value, ".")
        if op.kind == "var":
            name, parts = op.value
            if name not in vars:
                raise RenderError(f"undefined variable {name}")
            return self.lookup(vars[name], parts, name)
        if op.kind == "pipe":
            return self.eval_pipe(op.value, dot, vars)
        if op.kind == "func":
            return self.call(op.value, [], dot)
        raise RenderError(f"bad operand {op.kind}")

    def lookup(self, obj: Any, parts: list[str], start: str) -> Any:
        shown = start
        for part in parts:
            shown = f"{shown.rstrip('.')}.{part}"
            if obj is None:
                raise RenderError(f"nil pointer evaluating {shown}")
            if not isinstance(obj, dict):
                raise RenderError(f"{shown}: cannot take a field of {type(obj).__name__}")
            if isinstance(obj, TDict):
                path = f"{obj.path}.{part}" if obj.path else part
                self.usage.exact.add(path)
                if part not in obj:
                    raise RenderError(f"{shown}: values.yaml has no {path}")
            elif part not in obj:
                raise RenderError(f"{shown}: no such field")
            obj = obj[part]
        return obj

    def mark_whole(self, v: Any) -> None:
        if isinstance(v, Tracked):
            self.usage.whole.add(v.path)

    def call(self, name: str, args: list[Any], dot: Any) -> Any:
        def need(k: int) -> None:
            if len(args) != k:
                raise RenderError(f"{name} wants {k} arguments, got {len(args)}")

        if name == "include":
            need(2)
            tname, data = args
            if tname not in self.defines:
                raise RenderError(f"include of undefined template {tname!r}")
            out: list[str] = []
            self.exec_list(self.defines[tname], data, {"$": data}, out)
            return "".join(out)
        if name == "toYaml":
            need(1)
            self.mark_whole(args[0])
            return to_yaml(args[0])
        if name in ("nindent", "indent"):
            need(2)
            pad = " " * int(args[0])
            text = "\n".join(pad + line for line in go_str(args[1]).split("\n"))
            return "\n" + text if name == "nindent" else text
        if name == "default":
            if len(args) == 1:
                return args[0]
            need(2)
            return args[1] if truthy(args[1]) else args[0]
        if name in ("quote", "squote"):
            q = '"' if name == "quote" else "'"
            parts = [go_str(a) for a in args if a is not None]
            if name == "quote":
                return " ".join(json.dumps(p) for p in parts)
            return " ".join(q + p + q for p in parts)
        if name == "trunc":
            need(2)
            n, s = int(args[0]), go_str(args[1])
            return s[:n] if n >= 0 else s[n:]
        if name in ("trimSuffix", "trimPrefix"):
            need(2)
            affix, s = go_str(args[0]), go_str(args[1])
            if name == "trimSuffix":
                return s[: -len(affix)] if affix and s.endswith(affix) else s
            return s[len(affix):] if affix and s.startswith(affix) else s
        if name == "replace":
            need(3)
            return go_str(args[2]).replace(go_str(args[0]), go_str(args[1]))
        if name == "contains":
            need(2)
            return go_str(args[0]) in go_str(args[1])
        if name == "printf":
            return go_printf(go_str(args[0]), *args[1:])
        if name == "print":
            return "".join(go_str(a) for a in args)
        if name in ("lower", "upper", "toString"):
            need(1)
            s = go_str(args[0])
            return s.lower() if name == "lower" else s.upper() if name == "upper" else s
        if name == "eq":
            return any(untrack(args[0]) == untrack(b) for b in args[1:])
        if name == "ne":
            need(2)
            return untrack(args[0]) != untrack(args[1])
        if name in ("lt", "le", "gt", "ge"):
            need(2)
            a, b = args

            def kind(x: Any) -> str:
                if isinstance(x, bool):
                    return "bool"
                if isinstance(x, int):
                    return "int"
                if isinstance(x, float):
                    return "float"
                if isinstance(x, str):
                    return "string"
                return type(x).__name__

            ka, kb = kind(a), kind(b)
            if ka not in ("int", "float", "string") or kb not in ("int", "float", "string"):
                raise RenderError(f"{name}: invalid type for comparison ({ka}, {kb})")
            if ka != kb:  # Go's text/template: 2.0 (a value, float64 in Helm) vs 1 (a literal, int)
                raise RenderError(f"{name}: incompatible types for comparison ({ka} {go_str(a)}, {kb} {go_str(b)}); "
                                  f"convert with int or float64")
            return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[name]
        if name == "not":
            need(1)
            return not truthy(args[0])
        if name == "and":
            for a in args:
                if not truthy(a):
                    return a
            return args[-1]
        if name == "or":
            for a in args:
                if truthy(a):
                    return a
            return args[-1]
        if name == "empty":
            need(1)
            return not truthy(args[0])
        if name == "required":
            need(2)
            if args[1] is None or args[1] == "":
                raise RenderError(f"required: {args[0]}")
            return args[1]
        if name == "ternary":
            need(3)
            return args[0] if truthy(args[2]) else args[1]
        if name == "hasKey":
            need(2)
            return isinstance(args[0], dict) and args[1] in args[0]
        if name == "list":
            return list(args)
        if name == "int":
            need(1)
            return int(args[0])
        if name == "join":  # Sprig: each item as %v, nil items left out
            need(2)
            items = args[1] if isinstance(args[1], list) else [] if args[1] is None else [args[1]]
            return go_str(args[0]).join(go_str(x) for x in items if x is not None)
        if name == "b64enc":
            need(1)
            return base64.b64encode(go_str(args[0]).encode()).decode()
        if name == "sha256sum":
            need(1)
            return hashlib.sha256(go_str(args[0]).encode()).hexdigest()
        if name == "randAlphaNum":  # random in Helm; a fixed string of the same length here
            need(1)
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
            return "".join(alphabet[(7 * i + 3) % len(alphabet)] for i in range(int(args[0])))
        if name == "lookup":  # `helm template` and client-side dry runs: no cluster, nothing found
            need(4)
            if not all(isinstance(a, str) for a in args):
                raise RenderError("lookup wants apiVersion, kind, namespace and name as strings")
            return {}
        if name == "dig":  # dig "k1" "k2" default map: the nested value, or default where absent
            if len(args) < 3:
                raise RenderError("dig wants keys, a default and a map")
            *keys, dflt, node = args
            if not isinstance(node, dict):
                raise RenderError(f"dig of a {type(node).__name__}, not a map")
            for k in keys:
                if not isinstance(k, str):
                    raise RenderError(f"dig key {k!r} is not a string")
                if not isinstance(node, dict):  # Sprig panics on a step that is not a map
                    raise RenderError(f"dig through a {type(node).__name__}, not a map")
                if k not in node:
                    return dflt
                node = node[k]
            return node
        raise RenderError(f"function {name!r} is not supported by this checker")


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------

VALUES_REF_RE = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def deep_merge(base: Any, overlay: Any, where: str = "") -> Any:
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for k, v in overlay.items():
            path = f"{where}.{k}" if where else k
            if k not in base and base:  # an empty map in values.yaml is free-form
                raise KeyError(path)
            out[k] = deep_merge(base[k], v, path) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(overlay)


def values_leaves(values: Any, prefix: str = "") -> list[str]:
    """Paths of the leaves of values.yaml: scalars, lists and empty maps."""
    if isinstance(values, dict) and values:
        out = []
        for k, v in values.items():
            out.extend(values_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [prefix]


def path_exists(values: Any, parts: list[str]) -> bool:
    for p in parts:
        if not isinstance(values, dict) or p not in values:
            return False
        values = values[p]
    return True


class Checker:
    def __init__(self, chart: Path, crds: Path):
        """chart: the chart directory; crds: the directory of the generated CRDs."""
        self.chart = chart
        self.crds = crds
        self.errors: list[str] = []
        self.rendered: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.rendered_text: dict[str, list[tuple[str, str]]] = {}
        self.lease_name: str | None = None

    def err(self, where: str | Path, message: str) -> None:
        if isinstance(where, Path):
            try:
                where = str(where.relative_to(self.chart.parent.parent))
            except ValueError:
                where = str(where)
        self.errors.append(f"{where}: {message}")

    def rel(self, p: Path) -> str:
        try:
            return str(p.relative_to(self.chart.parent.parent))
        except ValueError:
            return str(p)

    def run(self) -> list[str]:
        chart_meta = self.check_chart_yaml()
        values = self.check_values_yaml()
        self.check_crd()
        templates = self.load_templates()
        if values is None or chart_meta is None or templates is None:
            return self.errors
        self.check_value_refs(templates, values)
        renderer = Renderer(templates)
        for e in renderer.syntax_errors:
            self.err(self.chart / "templates" / e.where, e.message)
        for scenario, overlay in SCENARIOS.items():
            try:
                merged = deep_merge(values, overlay)
            except KeyError as e:
                self.err(self.chart / "values.yaml",
                         f"check_chart.py scenario {scenario!r} sets {e.args[0]}, which values.yaml lacks")
                continue
            self.render_scenario(renderer, scenario, merged, chart_meta, templates)
        self.check_unused_values(values, renderer.usage)
        self.check_values_documented(renderer.usage)
        return self.errors

    # files

    def check_chart_yaml(self) -> dict[str, Any] | None:
        path = self.chart / "Chart.yaml"
        try:
            meta = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            self.err(path, f"cannot read: {e}")
            return None
        if not isinstance(meta, dict):
            self.err(path, "is not a mapping")
            return None
        if meta.get("apiVersion") != "v2":
            self.err(path, f"apiVersion must be v2, is {meta.get('apiVersion')!r}")
        if meta.get("name") != self.chart.name:
            self.err(path, f"name {meta.get('name')!r} differs from the directory name {self.chart.name!r}")
        if not SEMVER_RE.match(str(meta.get("version", ""))):
            self.err(path, f"version {meta.get('version')!r} is not SemVer 2")
        if not meta.get("appVersion"):
            self.err(path, "appVersion is missing")
        if meta.get("type", "application") != "application":
            self.err(path, f"type must be application, is {meta.get('type')!r}")
        return meta

    def check_values_yaml(self) -> dict[str, Any] | None:
        path = self.chart / "values.yaml"
        try:
            text = path.read_text()
            values = yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as e:
            self.err(path, f"cannot parse: {e}")
            return None
        if not isinstance(values, dict):
            self.err(path, "is not a mapping")
            return None
        return values

    def check_values_documented(self, usage: Usage) -> None:
        """Each top-level key has a comment above it (or on its line), and so does each key one
        level down unless its parent is passed to a template whole (a Kubernetes object such as
        resources or securityContext, documented by Kubernetes)."""
        path = self.chart / "values.yaml"
        lines = path.read_text().splitlines()
        parent = ""
        for i, line in enumerate(lines):
            m = re.match(r"^( *)([A-Za-z0-9_.-]+):", line)
            if not m or len(m.group(1)) not in (0, 2):
                continue
            key = m.group(2)
            if not m.group(1):
                parent = key
            elif parent in usage.whole:
                continue
            if "#" in line.split(":", 1)[1]:
                continue
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            if j < 0 or not lines[j].lstrip().startswith("#"):
                name = key if not m.group(1) else f"{parent}.{key}"
                self.err(path, f"line {i + 1}: {name} has no comment (document every value)")

    def check_crd(self) -> None:
        chart_dir = self.chart / "crds"
        names = set(REQUIRED_CRD_FILES)
        for d in (chart_dir, self.crds):
            if d.is_dir():
                names.update(p.name for p in d.iterdir() if p.suffix in (".yaml", ".yml"))
        for name in sorted(names):
            chart_crd, generated = chart_dir / name, self.crds / name
            if not generated.exists():
                self.err(generated, "generated CRD is missing" if name in REQUIRED_CRD_FILES else
                         f"no generated CRD of this name for the chart's {self.rel(chart_crd)}")
            if not chart_crd.exists():
                self.err(chart_crd, f"missing: copy {self.rel(generated)} here")
            if generated.exists() and chart_crd.exists() and chart_crd.read_bytes() != generated.read_bytes():
                self.err(chart_crd, f"differs from the generated {self.rel(generated)}: copy it again "
                                    f"(cp {self.rel(generated)} {self.rel(chart_crd)})")
        if not chart_dir.is_dir():
            return
        for p in sorted(chart_dir.iterdir()):
            try:
                docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
            except yaml.YAMLError as e:
                self.err(p, f"YAML: {e}")
                continue
            for d in docs:
                if not isinstance(d, dict) or d.get("kind") != "CustomResourceDefinition":
                    self.err(p, "holds something other than a CustomResourceDefinition")

    def load_templates(self) -> dict[str, str] | None:
        tdir = self.chart / "templates"
        if not tdir.is_dir():
            self.err(tdir, "missing")
            return None
        out = {}
        for p in sorted(tdir.rglob("*")):
            if p.is_file():
                out[str(p.relative_to(tdir))] = p.read_text()
        for required in ("_helpers.tpl", "NOTES.txt"):
            if required not in out:
                self.err(tdir / required, "missing")
        return out

    def check_value_refs(self, templates: dict[str, str], values: dict[str, Any]) -> None:
        for name, src in templates.items():
            for m in VALUES_REF_RE.finditer(src):
                parts = m.group(1)[1:].split(".")
                if not path_exists(values, parts):
                    line = src.count("\n", 0, m.start()) + 1
                    self.err(self.chart / "templates" / name,
                             f"line {line}: .Values.{'.'.join(parts)} is not in values.yaml")

    def check_unused_values(self, values: dict[str, Any], usage: Usage) -> None:
        for leaf in values_leaves(values):
            used = leaf in usage.exact or any(leaf == w or leaf.startswith(w + ".") for w in usage.whole)
            if not used:
                self.err(self.chart / "values.yaml", f"{leaf} is not used by any template")

    # rendering

    def render_scenario(self, renderer: Renderer, scenario: str, values: dict[str, Any],
                        chart_meta: dict[str, Any], templates: dict[str, str]) -> None:
        root = {
            "Values": track(values, ""),
            "Release": {"Name": RELEASE_NAME, "Namespace": RELEASE_NAMESPACE, "Service": "Helm",
                        "IsInstall": True, "IsUpgrade": False, "Revision": 1},
            "Chart": {"Name": chart_meta.get("name"), "Version": str(chart_meta.get("version")),
                      "AppVersion": str(chart_meta.get("appVersion")), "Description": chart_meta.get("description", "")},
            "Capabilities": {"KubeVersion": {"Version": "v1.33.0", "Major": "1", "Minor": "33"}},
        }
        docs: list[tuple[str, dict[str, Any]]] = []
        for name in templates:
            base = Path(name).name
            if base.startswith("_") or name not in renderer.trees:
                continue
            where = f"{self.rel(self.chart / 'templates' / name)} [values: {scenario}]"
            try:
                text = renderer.render(name, root)
            except CheckError as e:
                self.err(where, e.message)
                continue
            self.rendered_text.setdefault(scenario, []).append((name, text))
            if base == "NOTES.txt":
                if "<no value>" in text:
                    self.err(where, "renders <no value>")
                self.check_notes(where, text, values)
                continue
            if not name.endswith((".yaml", ".yml")):
                self.err(where, "templates/ holds a file that is neither YAML, NOTES.txt nor a _helper")
                continue
            for i, chunk in enumerate(re.split(r"(?m)^---[ \t]*$", text)):
                if not chunk.strip() or all(not l.strip() or l.lstrip().startswith("#") for l in chunk.splitlines()):
                    continue
                dwhere = f"{where} document {i + 1}"
                try:
                    doc = yaml.safe_load(chunk)
                except yaml.YAMLError as e:
                    self.err(dwhere, f"rendered YAML does not parse: {e}\n{excerpt(chunk, e)}")
                    continue
                if self.check_doc_shape(dwhere, doc):
                    docs.append((dwhere, doc))
        self.rendered[scenario] = docs
        self.check_objects(scenario, values, docs)

    def check_notes(self, where: str, text: str, values: dict[str, Any]) -> None:
        """NOTES.txt says how to upgrade each CRD: Helm installs crds/ on first install only."""
        crds_dir = f"charts/{self.chart.name}/crds/"
        command = "kubectl apply --server-side --force-conflicts -f"
        applied = set(re.findall(re.escape(command) + r" (\S+)", text))
        extra_volumes = [str(v) for v in (values.get("podSecurity") or {}).get("extraVolumeTypes") or []]
        for name in REQUIRED_CRD_FILES:
            chart_copy = bool({crds_dir, crds_dir + name} & applied)
            if name == "multitasktrainingjobs.yaml" and extra_volumes:
                # The chart's copy refuses the extra volume types: one generated with them instead.
                if chart_copy:
                    self.err(where, f"tells to apply the chart's {name} although podSecurity.extraVolumeTypes "
                                    f"is set: it would refuse the volume types {extra_volumes}")
                if f"--allow-volume-types {','.join(extra_volumes)}" not in text:
                    self.err(where, f"does not tell how to generate the job CRD with --allow-volume-types "
                                    f"{','.join(extra_volumes)}")
            elif not chart_copy:
                self.err(where, f"does not tell how to upgrade the CRD {name} (Helm installs crds/ on first "
                                f"install only, never on upgrade): `{command} {crds_dir}`")

    def check_doc_shape(self, where: str, doc: Any) -> bool:
        if not isinstance(doc, dict):
            self.err(where, "is not a mapping")
            return False
        ok = True
        for key in ("apiVersion", "kind"):
            if not isinstance(doc.get(key), str) or not doc.get(key):
                self.err(where, f"no {key}")
                ok = False
        meta = doc.get("metadata")
        if not isinstance(meta, dict) or not meta.get("name"):
            self.err(where, "no metadata.name")
            return False
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", str(meta["name"])) or len(str(meta["name"])) > 253:
            self.err(where, f"metadata.name {meta['name']!r} is not a valid DNS name")
        if doc.get("kind") in NAMESPACED_KINDS and not meta.get("namespace"):
            self.err(where, f"{doc.get('kind')} without metadata.namespace")
        labels = meta.get("labels") or {}
        for label in REQUIRED_LABELS:
            if label not in labels:
                self.err(where, f"label {label} missing")
        for k, v in labels.items():
            if not isinstance(v, str):
                self.err(where, f"label {k} is {v!r}, not a string (quote it)")
        return ok

    def check_objects(self, scenario: str, values: dict[str, Any], docs: list[tuple[str, dict[str, Any]]]) -> None:
        seen: dict[tuple[str, str, str], str] = {}
        by_kind: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for where, doc in docs:
            key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
            if key in seen:
                self.err(where, f"{key[0]} {key[2]} is also rendered by {seen[key]}")
            seen[key] = where
            by_kind.setdefault(doc["kind"], []).append((where, doc))

        deps = by_kind.get("Deployment", [])
        if len(deps) != 1:
            self.err(f"{self.rel(self.chart / 'templates')} [values: {scenario}]",
                     f"expected one Deployment, rendered {len(deps)}")
            return
        dwhere, dep = deps[0]
        pod_labels, sa_name = self.check_deployment(dwhere, dep, values)
        self.check_policy_values(scenario, values)
        self.check_operator_files(scenario, values, by_kind, dwhere, dep)

        for where, svc in by_kind.get("Service", []):
            sel = svc.get("spec", {}).get("selector") or {}
            self.check_selects_pods(where, "Service selector", sel, pod_labels)
            ports = svc.get("spec", {}).get("ports") or []
            if not any(p.get("name") == "metrics" and p.get("port") == values["metrics"]["port"]
                       and p.get("targetPort") == "metrics" for p in ports):
                self.err(where, "no port named metrics targeting the container's metrics port")

        monitors = by_kind.get("ServiceMonitor", [])
        if values["metrics"]["serviceMonitor"]["enabled"] != bool(monitors):
            self.err(f"{self.rel(self.chart / 'templates' / 'servicemonitor.yaml')} [values: {scenario}]",
                     "metrics.serviceMonitor.enabled does not toggle the ServiceMonitor")
        for where, sm in monitors:
            sel = (sm.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
            targets = [s for _, s in by_kind.get("Service", []) if sel and dict_subset(sel, s["metadata"].get("labels") or {})]
            if not targets:
                self.err(where, f"selector {sel} matches no rendered Service")
            ports = {p.get("name") for s in targets for p in s.get("spec", {}).get("ports") or []}
            for ep in sm.get("spec", {}).get("endpoints") or []:
                if ep.get("port") not in ports:
                    self.err(where, f"endpoint port {ep.get('port')!r} is not a port of the selected Service")

        policies = by_kind.get("NetworkPolicy", [])
        if values["networkPolicy"]["enabled"] != bool(policies):
            self.err(f"{self.rel(self.chart / 'templates' / 'networkpolicy.yaml')} [values: {scenario}]",
                     "networkPolicy.enabled does not toggle the NetworkPolicy")
        for where, np in policies:
            sel = (np.get("spec", {}).get("podSelector") or {}).get("matchLabels") or {}
            self.check_selects_pods(where, "podSelector", sel, pod_labels)
            ingress_ports = [p.get("port") for r in np.get("spec", {}).get("ingress") or [] for p in r.get("ports") or []]
            if values["metrics"]["port"] not in ingress_ports:
                self.err(where, "ingress does not allow the metrics port (probes and scrapes)")
            egress_ports = {p.get("port") for r in np.get("spec", {}).get("egress") or [] for p in r.get("ports") or []}
            for port in (53, 443):
                if port not in egress_ports:
                    self.err(where, f"egress does not allow port {port}")

        dep_selector = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        self.check_pdb(scenario, values, by_kind.get("PodDisruptionBudget", []), pod_labels, dep_selector)

        sas = by_kind.get("ServiceAccount", [])
        if values["serviceAccount"]["create"]:
            names = [s["metadata"]["name"] for _, s in sas]
            if names != [sa_name]:
                self.err(dwhere, f"runs as ServiceAccount {sa_name!r} but the chart renders {names}")
            for where, sa in sas:
                want = values["serviceAccount"]["annotations"] or {}
                got = sa["metadata"].get("annotations") or {}
                if not dict_subset(want, got):
                    self.err(where, f"annotations {got} lack serviceAccount.annotations {want}")
        elif sas:
            self.err(sas[0][0], "rendered although serviceAccount.create is false")

        if values["rbac"]["create"]:
            self.check_rbac(scenario, values, by_kind, sa_name)
        else:
            for kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
                for where, _ in by_kind.get(kind, []):
                    self.err(where, "rendered although rbac.create is false")

    def check_selects_pods(self, where: str, what: str, sel: dict[str, Any], pod_labels: dict[str, Any]) -> bool:
        """A matchLabels-style selector selects the operator pods (a non-empty subset of their labels)."""
        if not sel or not dict_subset(sel, pod_labels):
            self.err(where, f"{what} {sel} does not select the operator pods {pod_labels}")
            return False
        return True

    def check_pdb(self, scenario: str, values: dict[str, Any], pdbs: list[tuple[str, dict[str, Any]]],
                  pod_labels: dict[str, Any], dep_selector: dict[str, Any]) -> None:
        """The PodDisruptionBudget: only with several replicas, over the operator pods, minAvailable
        below replicas (else no operator pod could ever be evicted and node drains would hang)."""
        pdb_values = values.get("podDisruptionBudget") or {}
        replicas = values["replicas"]
        several = isinstance(replicas, (int, float)) and not isinstance(replicas, bool) and replicas > 1
        wanted = pdb_values.get("enabled") is True and several
        where_all = f"{self.rel(self.chart / 'templates' / 'poddisruptionbudget.yaml')} [values: {scenario}]"
        if wanted and not pdbs:
            self.err(where_all, f"no PodDisruptionBudget although podDisruptionBudget.enabled is true and "
                                f"replicas is {replicas}")
        elif pdbs and not wanted:
            why = (f"replicas is {replicas}: with one replica a PodDisruptionBudget blocks node drains forever"
                   if not several else "podDisruptionBudget.enabled is false")
            self.err(pdbs[0][0], f"PodDisruptionBudget rendered although {why}")
        if len(pdbs) > 1:
            self.err(pdbs[1][0], f"{len(pdbs)} PodDisruptionBudgets for the operator pods: the eviction API "
                                 f"refuses to evict a pod that more than one selects")
        for where, pdb in pdbs:
            if pdb.get("apiVersion") != "policy/v1":
                self.err(where, f"apiVersion {pdb.get('apiVersion')!r}, not policy/v1")
            spec = pdb.get("spec") or {}
            selector = spec.get("selector") or {}
            sel = selector.get("matchLabels") or {}
            if selector.get("matchExpressions"):
                self.err(where, "selector has matchExpressions: use the Deployment's matchLabels")
            if self.check_selects_pods(where, "PodDisruptionBudget selector", sel, pod_labels):
                if not dict_subset(dep_selector, sel):
                    self.err(where, f"PodDisruptionBudget selector {sel} is not the Deployment's {dep_selector}: "
                                    f"it would count other pods with the operator's")
            if "maxUnavailable" in spec:
                self.err(where, "sets maxUnavailable: the chart's budget is minAvailable (podDisruptionBudget.minAvailable)")
            got = spec.get("minAvailable")
            want = json_numbers(pdb_values.get("minAvailable"))
            if isinstance(got, bool) or not isinstance(got, int) or got < 1:
                self.err(where, f"minAvailable {got!r} is not a whole number of pods of at least 1")
                continue
            if got != want:
                self.err(where, f"minAvailable {got} is not podDisruptionBudget.minAvailable {want!r}")
            if isinstance(replicas, (int, float)) and got >= replicas:
                self.err(where, f"minAvailable {got} >= replicas {replicas}: no operator pod could ever be "
                                f"evicted, and node drains would block forever")

    def check_deployment(self, where: str, dep: dict[str, Any], values: dict[str, Any]) -> tuple[dict[str, Any], str]:
        spec = dep.get("spec") or {}
        tmpl = spec.get("template") or {}
        pod_labels = (tmpl.get("metadata") or {}).get("labels") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        if not selector or not dict_subset(selector, pod_labels):
            self.err(where, f"selector {selector} does not match the pod template labels {pod_labels}")
        if spec.get("replicas") != values["replicas"]:
            self.err(where, f"replicas {spec.get('replicas')!r} != values replicas {values['replicas']!r}")
        pod = tmpl.get("spec") or {}
        sa_name = pod.get("serviceAccountName", "")
        if not sa_name:
            self.err(where, "no serviceAccountName")
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            self.err(where, "pod securityContext.runAsNonRoot is not true")
        if (psc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            self.err(where, "pod seccompProfile is not RuntimeDefault")
        containers = pod.get("containers") or []
        if len(containers) != 1:
            self.err(where, f"expected one container, found {len(containers)}")
            return pod_labels, sa_name
        c = containers[0]
        port = values["metrics"]["port"]
        args = [str(a) for a in c.get("args") or []]
        if not args or args[0] != "run":
            self.err(where, f"args {args} do not start with the `run` subcommand")
        addr = f"0.0.0.0:{port}"
        if not any(a == f"--metrics-addr={addr}" or (a == "--metrics-addr" and i + 1 < len(args) and args[i + 1] == addr)
                   for i, a in enumerate(args)):
            self.err(where, f"args {args} lack --metrics-addr {addr}")
        # Operator settings the chart passes as flags: each value once, after its flag.
        pairs = list(zip(args, args[1:]))
        flags = [("--default-image", [values.get("defaultTrainerImage")] if values.get("defaultTrainerImage") else [])]
        for flag, wanted in flags:
            passed = [b for a, b in pairs if a == flag]
            if passed != wanted:
                self.err(where, f"args pass {flag} {passed}, values say {wanted}")
        extra_volumes = [str(v) for v in (values.get("podSecurity") or {}).get("extraVolumeTypes") or []]
        passed = [a.split("=", 1)[1] if "=" in a else b for a, b in zip(args, args[1:] + [""])
                  if a == "--allow-volume-types" or a.startswith("--allow-volume-types=")]
        wanted = [",".join(extra_volumes)] if extra_volumes else []
        if passed != wanted:
            self.err(where, f"args pass --allow-volume-types {passed}, podSecurity.extraVolumeTypes says {wanted}")
        for a in args:
            if a.split("=", 1)[0] in REMOVED_FLAGS:
                self.err(where, f"args pass {a.split('=', 1)[0]}, which the operator no longer has "
                                f"(the policy is data: values policy, --policy-file)")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        if ports.get("metrics") != port:
            self.err(where, f"container port 'metrics' is {ports.get('metrics')!r}, metrics.port is {port}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path or get.get("port") not in ("metrics", port):
                self.err(where, f"{probe} should GET {path} on the metrics port, is {get}")
        env = {e.get("name"): e for e in c.get("env") or []}
        for name in env:
            if str(name).startswith(REMOVED_ENV_PREFIX):
                self.err(where, f"env {name}: the operator no longer reads {REMOVED_ENV_PREFIX}* (the policy is data)")
        if "RUST_LOG" not in env or env["RUST_LOG"].get("value") != values["logLevel"]:
            self.err(where, "env RUST_LOG does not carry logLevel")
        for name, fpath in (("POD_NAMESPACE", "metadata.namespace"), ("POD_NAME", "metadata.name")):
            ref = ((env.get(name) or {}).get("valueFrom") or {}).get("fieldRef") or {}
            if ref.get("fieldPath") != fpath:
                self.err(where, f"env {name} is not the downward-API field {fpath}")
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            self.err(where, "container allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            self.err(where, "container readOnlyRootFilesystem is not true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            self.err(where, "container does not drop ALL capabilities")
        self.lease_name = arg_value(args, "--lease-name")
        image = str(c.get("image", ""))
        if not image or image.endswith((":", "@")) or ":" not in image.split("/")[-1] and "@" not in image:
            self.err(where, f"image {image!r} has no tag or digest")
        return pod_labels, sa_name

    def check_policy_values(self, scenario: str, values: dict[str, Any]) -> None:
        """The values' policy is a MultiTaskTrainingPolicy spec: the operator refuses to start
        on a field it does not know or a wrong type."""
        where = f"{self.rel(self.chart / 'values.yaml')} [values: {scenario}]"
        policy = values.get("policy")
        if policy is None:
            return
        if not isinstance(policy, dict):
            self.err(where, f"policy is {policy!r}, not a map")
            return

        def check_list(path: str, v: Any) -> None:
            if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                self.err(where, f"{path} is {v!r}, not a list of strings (or null)")

        for key, v in policy.items():
            if key in POLICY_LIST_FIELDS:
                check_list(f"policy.{key}", v)
            elif key in POLICY_NUMBER_FIELDS:
                whole = isinstance(v, int) or isinstance(v, float) and v.is_integer()  # Helm: float64
                if v is not None and (isinstance(v, bool) or not whole or v < 0 or v >= 2**32):
                    self.err(where, f"policy.{key} is {v!r}, not a whole number from 0 to 2^32-1 (or null)")
            elif key == "vertexAI":
                if v is not None and not isinstance(v, dict):
                    self.err(where, f"policy.vertexAI is {v!r}, not a map")
                    continue
                for vk, vv in (v or {}).items():
                    if vk in POLICY_VERTEX_FIELDS:
                        check_list(f"policy.vertexAI.{vk}", vv)
                    elif vk in POLICY_VERTEX_FLAGS:
                        if vv is not None and not isinstance(vv, bool):
                            self.err(where, f"policy.vertexAI.{vk} is {vv!r}, not true or false (or null)")
                    else:
                        self.err(where, f"policy.vertexAI.{vk} is not a field of a MultiTaskTrainingPolicy's "
                                        f"vertexAI ({', '.join(POLICY_VERTEX_FIELDS + POLICY_VERTEX_FLAGS)})")
            else:
                self.err(where, f"policy.{key} is not a MultiTaskTrainingPolicy spec field (the operator "
                                f"would refuse to start)")

    def mounted_file(self, where: str, pod: dict[str, Any], container: dict[str, Any], flag: str,
                     path: str | None) -> tuple[str, dict[str, Any], str] | None:
        """The volume a file the operator reads comes from: (configMap or secret, the volume
        source, the key of the file in it); errors for a path outside read-only mounts."""
        if not path:
            self.err(where, f"args lack {flag}")
            return None
        mount = None
        for m in container.get("volumeMounts") or []:
            mp = str(m.get("mountPath", "")).rstrip("/")
            if mp and path.startswith(mp + "/") and (mount is None or len(mp) > len(mount["mountPath"].rstrip("/"))):
                mount = m
        if mount is None:
            self.err(where, f"{flag} {path} lies in no volumeMount")
            return None
        if mount.get("readOnly") is not True:
            self.err(where, f"volumeMount {mount.get('name')!r} of {flag} is not readOnly")
        if mount.get("subPath") or mount.get("subPathExpr"):
            self.err(where, f"volumeMount {mount.get('name')!r} of {flag} uses a subPath: mount the whole "
                            f"volume, read-only (what this check resolves)")
            return None
        rel = path[len(mount["mountPath"].rstrip("/")) + 1:]
        vol = next((v for v in pod.get("volumes") or [] if v.get("name") == mount.get("name")), None)
        if vol is None:
            self.err(where, f"volumeMount {mount.get('name')!r} of {flag} names no volume")
            return None
        for kind in ("configMap", "secret"):
            src = vol.get(kind)
            if isinstance(src, dict):
                if src.get("optional"):
                    self.err(where, f"volume {vol.get('name')!r} of {flag} is optional")
                items = src.get("items")
                key = rel if not items else next((i.get("key") for i in items if i.get("path") == rel), None)
                if key is None:
                    self.err(where, f"volume {vol.get('name')!r} of {flag} has no item at {rel!r}")
                    return None
                return kind, src, key
        self.err(where, f"volume {vol.get('name')!r} of {flag} is neither a configMap nor a secret")
        return None

    def check_operator_files(self, scenario: str, values: dict[str, Any],
                             by_kind: dict[str, list[tuple[str, dict[str, Any]]]], dwhere: str,
                             dep: dict[str, Any]) -> None:
        """--policy-file: the values' policy via the ConfigMap <fullname>-policy;
        --accepted-spec-key-file: the key of the Secret the chart creates or existingSecret."""
        fullname = dep["metadata"]["name"]
        tmpl = (dep.get("spec") or {}).get("template") or {}
        pod = tmpl.get("spec") or {}
        containers = pod.get("containers") or []
        if len(containers) != 1:
            return
        c = containers[0]
        args = [str(a) for a in c.get("args") or []]
        for flag in ("--policy-file", "--accepted-spec-key-file"):
            n = sum(1 for a in args if a == flag or a.startswith(flag + "="))
            if n > 1:
                self.err(dwhere, f"args pass {flag} {n} times")

        configmaps = {d["metadata"]["name"]: (w, d) for w, d in by_kind.get("ConfigMap", [])}
        cm_name = f"{fullname}-policy"
        policy_text = None
        if cm_name not in configmaps:
            self.err(f"{self.rel(self.chart / 'templates')} [values: {scenario}]",
                     f"no ConfigMap {cm_name} holding the policy (values: policy)")
        else:
            w, cm = configmaps[cm_name]
            policy_text = (cm.get("data") or {}).get("policy.yaml")
            if not isinstance(policy_text, str):
                self.err(w, "no data key policy.yaml")
                policy_text = None
            else:
                try:
                    got = yaml.safe_load(policy_text)
                except yaml.YAMLError as e:
                    self.err(w, f"policy.yaml does not parse: {e}")
                else:
                    want = json_numbers(values.get("policy") or {})
                    if (got if got is not None else {}) != want:
                        self.err(w, f"policy.yaml is {got!r}, not the values' policy {want!r}")
        src = self.mounted_file(dwhere, pod, c, "--policy-file", arg_value(args, "--policy-file"))
        if src is not None:
            kind, vs, key = src
            if kind != "configMap" or vs.get("name") != cm_name or key != "policy.yaml":
                self.err(dwhere, f"--policy-file reads {kind} {vs.get('name') or vs.get('secretName')!r} "
                                 f"key {key!r}, not ConfigMap {cm_name!r} key 'policy.yaml'")
        annotations = (tmpl.get("metadata") or {}).get("annotations") or {}
        if policy_text is not None:
            digest = hashlib.sha256(policy_text.rstrip("\n").encode()).hexdigest()
            if annotations.get("checksum/policy") != digest:
                self.err(dwhere, f"pod annotation checksum/policy is {annotations.get('checksum/policy')!r}, "
                                 f"not the sha256 of the policy ({digest}): a new policy would not roll the pods")

        existing = (values.get("acceptedSpecKey") or {}).get("existingSecret") or ""
        own_name = f"{fullname}-accepted-spec-key"
        secret_name = existing or own_name
        secrets = {d["metadata"]["name"]: (w, d) for w, d in by_kind.get("Secret", [])}
        if existing:
            for name in sorted({own_name, existing} & set(secrets)):
                self.err(secrets[name][0], f"Secret {name} rendered although acceptedSpecKey.existingSecret is set "
                                           f"(the chart must not write over your key)")
        elif own_name not in secrets:
            self.err(f"{self.rel(self.chart / 'templates')} [values: {scenario}]",
                     f"no Secret {own_name} holding the accepted-spec key")
        else:
            w, secret = secrets[own_name]
            if (secret["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") != "keep":
                self.err(w, "lacks the annotation helm.sh/resource-policy: keep (uninstall would lose the key "
                            "and with it every accepted spec's signature)")
            encoded = (secret.get("data") or {}).get("key")
            try:
                raw = base64.b64decode(str(encoded or ""), validate=True)
            except (binascii.Error, ValueError):
                self.err(w, f"data.key {encoded!r} is not base64")
            else:
                if len(raw.strip()) < 16:
                    self.err(w, f"data.key holds {len(raw.strip())} bytes; the operator wants at least 16")
        src = self.mounted_file(dwhere, pod, c, "--accepted-spec-key-file", arg_value(args, "--accepted-spec-key-file"))
        if src is not None:
            kind, vs, key = src
            if kind != "secret" or vs.get("secretName") != secret_name or key != "key":
                self.err(dwhere, f"--accepted-spec-key-file reads {kind} {vs.get('secretName') or vs.get('name')!r} "
                                 f"key {key!r}, not Secret {secret_name!r} key 'key'")

    def check_rbac(self, scenario: str, values: dict[str, Any],
                   by_kind: dict[str, list[tuple[str, dict[str, Any]]]], sa_name: str) -> None:
        where_all = f"{self.rel(self.chart / 'templates')} [values: {scenario}]"
        watch_ns = values["watchNamespace"] or "*"
        roles = {("ClusterRole", "", d["metadata"]["name"]): (w, d) for w, d in by_kind.get("ClusterRole", [])}
        roles.update({("Role", d["metadata"]["namespace"], d["metadata"]["name"]): (w, d) for w, d in by_kind.get("Role", [])})
        for w, d in list(roles.values()):
            for rule in d.get("rules") or []:
                for key in ("apiGroups", "resources", "verbs"):
                    if "*" in (rule.get(key) or []):
                        self.err(w, f"rule {rule} uses a wildcard in {key}")
                if rule.get("nonResourceURLs"):
                    self.err(w, f"rule {rule} grants nonResourceURLs")
                names = rule.get("resourceNames") or []
                if names and {"create", "list", "watch", "deletecollection"} & set(rule.get("verbs") or []):
                    self.err(w, f"rule {rule}: resourceNames cannot authorize create, list, watch or deletecollection")
                if names and "leases" in (rule.get("resources") or []) and self.lease_name not in names:
                    self.err(w, f"rule {rule}: resourceNames {names} lack the Deployment's --lease-name {self.lease_name!r}")
                if names and "multitasktrainingpolicies" in (rule.get("resources") or []) and POLICY_NAME not in names:
                    self.err(w, f"rule {rule}: resourceNames {names} lack {POLICY_NAME!r}, the policy the operator reads")
        # Roles for people: checked on their own, never the operator's.
        aggregated = {k: v for k, v in roles.items() if k[0] == "ClusterRole" and k[2] in AGGREGATED_ROLES}
        for rkey, (w, d) in roles.items():
            labels = [l for l in (d["metadata"].get("labels") or {}) if l.startswith(AGG_LABEL)]
            if labels and rkey not in aggregated:
                self.err(w, f"{rkey[0]} {rkey[2]} carries {', '.join(labels)}: its rules would reach every "
                            f"namespace's users (only {', '.join(AGGREGATED_ROLES)} may)")
        self.check_aggregated_roles(scenario, values, aggregated)

        granted: dict[tuple[str, str, str, str], str] = {}  # (namespace or *, group, resource, verb) -> role file
        bound_roles = set()
        for kind in ("ClusterRoleBinding", "RoleBinding"):
            for w, b in by_kind.get(kind, []):
                ref = b.get("roleRef") or {}
                ns = b["metadata"].get("namespace", "") if kind == "RoleBinding" else ""
                rkey = (ref.get("kind"), ns if ref.get("kind") == "Role" else "", ref.get("name"))
                if rkey not in roles:
                    self.err(w, f"roleRef {ref} names no rendered role")
                    continue
                bound_roles.add(rkey)
                if rkey in aggregated:
                    self.err(w, f"binds {rkey[2]}, a role for people aggregated into Kubernetes' own roles")
                    continue
                subjects = b.get("subjects") or []
                if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name
                           and s.get("namespace") == RELEASE_NAMESPACE for s in subjects):
                    self.err(w, f"does not bind the operator's ServiceAccount {RELEASE_NAMESPACE}/{sa_name}")
                    continue
                scope = "*" if kind == "ClusterRoleBinding" else ns
                rw, role = roles[rkey]
                for rule in role.get("rules") or []:
                    named = bool(rule.get("resourceNames"))
                    for g in rule.get("apiGroups") or []:
                        for r in rule.get("resources") or []:
                            for v in rule.get("verbs") or []:
                                if named and v in ("create", "list", "watch", "deletecollection"):
                                    continue  # a name-restricted rule never authorizes these
                                granted[(scope, g, r, v)] = rw
        for rkey, (w, _) in roles.items():
            if rkey not in bound_roles and rkey not in aggregated:
                self.err(w, f"{rkey[0]} {rkey[2]} is not bound to anything")

        def switched_on(path: str) -> bool:
            node: Any = values
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            return node is True

        required = list(REQUIRED_RBAC) + [
            rule for when, *rule in REQUIRED_RBAC_WHEN if switched_on(when)
        ]
        wanted = set()
        for scope, group, resource, verbs in required:
            ns = RELEASE_NAMESPACE if scope == "release" else watch_ns
            for v in verbs:
                wanted.add((ns, group, resource, v))
                if (ns, group, resource, v) not in granted:
                    where = "cluster-wide" if ns == "*" else f"in namespace {ns}"
                    self.err(where_all, f"RBAC does not grant {v} on {resource} "
                                        f"(apiGroup {group!r}) {where}, which the operator needs")
        for key, w in sorted(granted.items()):
            if key not in wanted:
                ns, group, resource, v = key
                where = "cluster-wide" if ns == "*" else f"in namespace {ns}"
                self.err(w, f"grants {v} on {resource} (apiGroup {group!r}) {where}: more than the "
                            f"operator needs (add it to REQUIRED_RBAC in check_chart.py if it does)")

    def check_aggregated_roles(self, scenario: str, values: dict[str, Any],
                               aggregated: dict[tuple[str, str, str], tuple[str, dict[str, Any]]]) -> None:
        where_all = f"{self.rel(self.chart / 'templates')} [values: {scenario}]"
        enabled = (values.get("aggregatedRoles") or {}).get("enabled") is True
        if not enabled:
            for w, d in aggregated.values():
                self.err(w, f"ClusterRole {d['metadata']['name']} rendered although aggregatedRoles.enabled is false")
            return
        for name, (joins, rules) in AGGREGATED_ROLES.items():
            if ("ClusterRole", "", name) not in aggregated:
                self.err(where_all, f"no ClusterRole {name} although aggregatedRoles.enabled is true")
                continue
            w, role = aggregated[("ClusterRole", "", name)]
            labels = role["metadata"].get("labels") or {}
            want_labels = {f"{AGG_LABEL}{r}" for r in joins}
            got_labels = {k for k, v in labels.items() if k.startswith(AGG_LABEL) and v == "true"}
            for label in sorted(want_labels - got_labels):
                self.err(w, f"ClusterRole {name} lacks the label {label}: \"true\"")
            for label in sorted(got_labels - want_labels):
                self.err(w, f"ClusterRole {name} has the label {label}: more than it is meant for")
            granted: set[tuple[str, str, str]] = set()
            for rule in role.get("rules") or []:
                if rule.get("resourceNames"):
                    self.err(w, f"ClusterRole {name}: rule {rule} is restricted by resourceNames")
                for g in rule.get("apiGroups") or []:
                    for r in rule.get("resources") or []:
                        for v in rule.get("verbs") or []:
                            granted.add((g, r, v))
                            if (r in NO_WRITES_FOR_USERS or r == "*") and v in WRITE_VERBS:
                                self.err(w, f"ClusterRole {name} grants {v} on {r} (apiGroup {g!r}): namespace "
                                            f"users must not write a job's status nor widen their own policy")
            wanted = {(g, r, v) for g, r, verbs in rules for v in verbs}
            for g, r, v in sorted(wanted - granted):
                self.err(w, f"ClusterRole {name} does not grant {v} on {r} (apiGroup {g!r})")
            for g, r, v in sorted(granted - wanted):
                self.err(w, f"ClusterRole {name} grants {v} on {r} (apiGroup {g!r}): more than "
                            f"AGGREGATED_ROLES in check_chart.py says")


def arg_value(args: list[str], flag: str) -> str | None:
    """The value of `--flag value` or `--flag=value` in a container's args."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a[len(flag) + 1:]
    return None


def excerpt(text: str, e: yaml.YAMLError, around: int = 3) -> str:
    """The rendered lines around a YAML error, numbered, for the error message."""
    mark = getattr(e, "problem_mark", None)
    lines = text.splitlines()
    if mark is None:
        return "\n".join(lines[:10])
    lo, hi = max(0, mark.line - around), min(len(lines), mark.line + around + 1)
    return "\n".join(f"  {'>' if i == mark.line else ' '}{i + 1:4d} | {lines[i]}" for i in range(lo, hi))


def dict_subset(small: dict[str, Any], big: dict[str, Any]) -> bool:
    return all(k in big and big[k] == v for k, v in small.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chart", type=Path, default=DEFAULT_CHART, help="chart directory (default: %(default)s)")
    ap.add_argument("--crds", type=Path, default=DEFAULT_CRDS,
                    help="directory of the generated CRDs (default: %(default)s)")
    ap.add_argument("--render", metavar="SCENARIO", nargs="?", const="defaults",
                    help=f"print the manifests rendered with a value set ({', '.join(SCENARIOS)})")
    args = ap.parse_args(argv)
    checker = Checker(args.chart.resolve(), args.crds.resolve())
    errors = checker.run()
    if args.render:
        if args.render not in SCENARIOS:
            ap.error(f"--render: no value set {args.render!r}; choose from {', '.join(SCENARIOS)}")
        for name, text in checker.rendered_text.get(args.render, []):
            if text.strip() and Path(name).name != "NOTES.txt":
                print(f"---\n# Source: {checker.chart.name}/templates/{name}\n{text.strip(chr(10))}")
    if errors:
        for e in errors:
            print(f"check_chart: {e}", file=sys.stderr)
        print(f"check_chart: {len(errors)} problem(s) in {checker.rel(checker.chart)}", file=sys.stderr)
        return 1
    ndocs = sum(len(d) for d in checker.rendered.values())
    print(f"check_chart: {checker.rel(checker.chart)} ok ({len(SCENARIOS)} value sets, {ndocs} rendered objects, "
          f"{sum(len(v) for *_, v in REQUIRED_RBAC)} required RBAC grants, "
          f"{sum(len(v) for *_, v in REQUIRED_RBAC_WHEN)} more with values switched on)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
