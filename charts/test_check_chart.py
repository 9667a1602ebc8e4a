"""Tests for charts/check_chart.py: the real chart passes, and broken copies of it fail.

Run with either:
    python -m unittest discover -s charts -p 'test_*.py'
    python -m pytest charts/test_check_chart.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_chart  # noqa: E402
from check_chart import Checker, Renderer, go_float, track  # noqa: E402

CHART = check_chart.DEFAULT_CHART
CRDS = check_chart.DEFAULT_CRDS


class BrokenChart:
    """A temporary copy of charts/mtl-operator and the generated crds/*.yaml to break."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        self.chart = root / "charts" / "mtl-operator"
        self.crds = root / "crds"
        self.crd = self.crds / "multitasktrainingjobs.yaml"
        shutil.copytree(CHART, self.chart)
        self.crds.mkdir(parents=True)
        for crd in CRDS.glob("*.yaml"):
            shutil.copyfile(crd, self.crds / crd.name)

    def edit(self, rel: str, old: str, new: str, count: int = 1) -> None:
        path = self.chart / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, count))

    def errors(self) -> list[str]:
        return Checker(self.chart, self.crds).run()

    def close(self) -> None:
        self.tmp.cleanup()


class RealChart(unittest.TestCase):
    def test_chart_passes(self) -> None:
        self.assertEqual(Checker(CHART, CRDS).run(), [])

    def test_command_line_exit_status(self) -> None:
        ok = subprocess.run([sys.executable, str(Path(check_chart.__file__))], capture_output=True, text=True)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertIn("ok", ok.stdout)

    def test_required_rbac_is_the_brief(self) -> None:
        grants = {(g, r): set(v) for _, g, r, v in check_chart.REQUIRED_RBAC}
        self.assertEqual(grants[("multitask.dev", "multitasktrainingjobs")],
                         {"list", "watch", "patch", "delete"})
        self.assertEqual(grants[("", "pods")], {"get", "list", "watch", "create", "delete"})
        self.assertEqual(grants[("multitask.dev", "multitasktrainingjobs/finalizers")], {"update"})
        self.assertEqual(grants[("coordination.k8s.io", "leases")], {"get", "create", "update"})
        self.assertNotIn(("", "events"), grants, "kube's Recorder writes events.k8s.io/v1 only")
        self.assertEqual(grants[("multitask.dev", "multitasktrainingpolicies")], {"get"})
        self.assertEqual(check_chart.REQUIRED_CRD_FILES, ("multitasktrainingjobs.yaml", "multitasktrainingpolicies.yaml"))

    def test_aggregated_roles_are_the_brief(self) -> None:
        view_labels, view = check_chart.AGGREGATED_ROLES["mtl-view"]
        edit_labels, edit = check_chart.AGGREGATED_ROLES["mtl-edit"]
        self.assertEqual(set(view_labels), {"view", "edit", "admin"})
        self.assertEqual(set(edit_labels), {"edit", "admin"})
        self.assertEqual({r for _, r, _ in view},
                         {"multitasktrainingjobs", "multitasktrainingjobs/status", "multitasktrainingpolicies"})
        self.assertTrue(all(set(v) == {"get", "list", "watch"} for *_, v in view))
        self.assertEqual([(r, set(v)) for _, r, v in edit],
                         [("multitasktrainingjobs", {"create", "update", "patch", "delete", "deletecollection"})])

    def test_pdb_scenarios_cover_on_and_off(self) -> None:
        # On (several replicas), off by podDisruptionBudget.enabled, off with one replica.
        checker = Checker(CHART, CRDS)
        self.assertEqual(checker.run(), [])
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        seen = set()
        for scenario, overlay in check_chart.SCENARIOS.items():
            merged = check_chart.deep_merge(values, overlay)
            pdbs = [d for _, d in checker.rendered[scenario] if d["kind"] == "PodDisruptionBudget"]
            if not merged["podDisruptionBudget"]["enabled"]:
                seen.add("disabled")
                self.assertEqual(pdbs, [], scenario)
            elif merged["replicas"] <= 1:
                seen.add("one replica")
                self.assertEqual(pdbs, [], scenario)
            else:
                seen.add("on")
                self.assertEqual(len(pdbs), 1, scenario)
                self.assertEqual(pdbs[0]["apiVersion"], "policy/v1")
                self.assertLess(pdbs[0]["spec"]["minAvailable"], merged["replicas"])
        self.assertEqual(seen, {"on", "disabled", "one replica"})
        self.assertEqual((values["replicas"], values["podDisruptionBudget"]),
                         (2, {"enabled": True, "minAvailable": 1}))

    def test_all_toggles_sets_every_policy_field(self) -> None:
        # So that every field goes through the ConfigMap and the type checks.
        policy = check_chart.SCENARIOS["all-toggles-on"]["policy"]
        self.assertEqual(set(policy), {*check_chart.POLICY_LIST_FIELDS, *check_chart.POLICY_NUMBER_FIELDS, "vertexAI"})
        self.assertEqual(set(policy["vertexAI"]),
                         {*check_chart.POLICY_VERTEX_FIELDS, *check_chart.POLICY_VERTEX_FLAGS})


class BrokenCopies(unittest.TestCase):
    def setUp(self) -> None:
        self.b = BrokenChart()

    def tearDown(self) -> None:
        self.b.close()

    def assertFails(self, *patterns: str) -> list[str]:
        errors = self.b.errors()
        self.assertTrue(errors, "the checker accepted a broken chart")
        text = "\n".join(errors)
        for p in patterns:
            self.assertRegex(text, p)
        return errors

    def test_copy_passes_before_breaking(self) -> None:
        self.assertEqual(self.b.errors(), [])

    def test_template_reads_a_missing_value(self) -> None:
        self.b.edit("templates/deployment.yaml", ".Values.logLevel", ".Values.logLevl")
        self.assertFails(r"templates/deployment\.yaml: line \d+: \.Values\.logLevl is not in values\.yaml")

    def test_values_yaml_lacks_a_value(self) -> None:
        self.b.edit("values.yaml", "  # Container port the operator listens on (--metrics-addr 0.0.0.0:<port>) and Service port.\n  port: 8080\n", "")
        self.assertFails(r"\.Values\.metrics\.port is not in values\.yaml", r"values\.yaml has no metrics\.port")

    def test_missing_value_fails_on_the_command_line(self) -> None:
        self.b.edit("templates/service.yaml", ".Values.metrics.port", ".Values.metrics.portt")
        run = subprocess.run([sys.executable, str(Path(check_chart.__file__)), "--chart", str(self.b.chart),
                              "--crds", str(self.b.crds)], capture_output=True, text=True)
        self.assertEqual(run.returncode, 1)
        self.assertIn("templates/service.yaml", run.stderr)
        self.assertIn("metrics.portt", run.stderr)

    def test_unused_value(self) -> None:
        self.b.edit("values.yaml", "logLevel: info\n", "logLevel: info\n\n# Not read anywhere.\nunused: 1\n")
        self.assertFails(r"values\.yaml: unused is not used by any template")

    def test_undocumented_value(self) -> None:
        self.b.edit("values.yaml", "logLevel: info\n", "logLevel: info\nlogFormat: json\n")
        self.b.edit("templates/deployment.yaml", "- name: RUST_LOG", "- name: LOG_FORMAT\n              value: {{ .Values.logFormat }}\n            - name: RUST_LOG")
        self.assertFails(r"values\.yaml: line \d+: logFormat has no comment")

    def test_crd_drift(self) -> None:
        self.b.crd.write_text(self.b.crd.read_text() + "# regenerated\n")
        self.assertFails(r"crds/multitasktrainingjobs\.yaml: differs from the generated")

    def test_every_crd_is_compared(self) -> None:
        # Not only the job CRD's: a generated CRD whatever its name, byte for byte.
        crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: x.multitask.dev\n"
        (self.b.crds / "extra.yaml").write_text(crd)
        (self.b.chart / "crds" / "extra.yaml").write_text(crd)
        self.assertEqual(self.b.errors(), [])
        (self.b.crds / "extra.yaml").write_text(crd + "# regenerated\n")
        self.assertFails(r"mtl-operator/crds/extra\.yaml: differs from the generated crds/extra\.yaml")

    def test_policy_crd_missing_from_the_chart(self) -> None:
        (self.b.chart / "crds" / "multitasktrainingpolicies.yaml").unlink()
        self.assertFails(r"mtl-operator/crds/multitasktrainingpolicies\.yaml: missing: copy crds/multitasktrainingpolicies\.yaml here")

    def test_policy_crd_not_generated(self) -> None:
        (self.b.crds / "multitasktrainingpolicies.yaml").unlink(missing_ok=True)
        self.assertFails(r"(?m)^crds/multitasktrainingpolicies\.yaml: generated CRD is missing")

    def test_chart_crd_without_a_generated_one(self) -> None:
        (self.b.chart / "crds" / "handmade.yaml").write_text(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: h.multitask.dev\n")
        self.assertFails(r"crds/handmade\.yaml: no generated CRD of this name")

    def test_rbac_missing_verb(self) -> None:
        self.b.edit("templates/clusterrole.yaml", '"watch", "create", "delete"]', '"watch", "create"]')
        self.assertFails(r"RBAC does not grant delete on pods \(apiGroup ''\) cluster-wide",
                         r"RBAC does not grant delete on pods \(apiGroup ''\) in namespace ml-jobs")

    def test_rbac_missing_finalizers(self) -> None:
        self.b.edit("templates/clusterrole.yaml", '"multitasktrainingjobs/finalizers"', '"multitasktrainingjobs/finalizer"')
        self.assertFails(r"does not grant update on multitasktrainingjobs/finalizers",
                         r"grants update on multitasktrainingjobs/finalizer .*more than the operator needs")

    def test_rbac_extra_grant(self) -> None:
        self.b.edit("templates/clusterrole.yaml", 'resources: ["pods"]', 'resources: ["pods", "secrets"]')
        self.assertFails(r"clusterrole\.yaml.*: grants get on secrets \(apiGroup ''\) cluster-wide: more than")

    def test_rbac_missing_policies(self) -> None:
        self.b.edit("templates/clusterrole.yaml",
                    '    resources: ["multitasktrainingpolicies"]\n    resourceNames: ["default"]\n    verbs: ["get"]\n',
                    '    resources: ["multitasktrainingjobs"]\n    verbs: ["get"]\n')
        self.assertFails(r"RBAC does not grant get on multitasktrainingpolicies \(apiGroup 'multitask\.dev'\) cluster-wide",
                         r"RBAC does not grant get on multitasktrainingpolicies .* in namespace ml-jobs",
                         r"grants get on multitasktrainingjobs .*more than the operator needs")

    def test_rbac_policies_named_wrong(self) -> None:
        self.b.edit("templates/clusterrole.yaml", 'resourceNames: ["default"]', 'resourceNames: ["cluster"]')
        self.assertFails(r"resourceNames \['cluster'\] lack 'default', the policy the operator reads")

    def test_rbac_wildcard(self) -> None:
        self.b.edit("templates/leader-election-rbac.yaml", '["get", "update"]', '["*"]')
        self.assertFails(r"leader-election-rbac\.yaml.*uses a wildcard in verbs")

    def test_rbac_cluster_wide_when_a_namespace_is_watched(self) -> None:
        # A ClusterRole even with watchNamespace set: the grants land cluster-wide, not in the namespace.
        for f in ("templates/clusterrole.yaml", "templates/clusterrolebinding.yaml"):
            self.b.edit(f, "{{- if .Values.watchNamespace }}", "{{- if false }}")
        self.b.edit("templates/clusterrolebinding.yaml", "{{ if .Values.watchNamespace }}Role{{ else }}ClusterRole{{ end }}", "ClusterRole")
        self.assertFails(r"all-toggles-on.*does not grant get on pods .* in namespace ml-jobs",
                         r"all-toggles-on.*grants get on pods .* cluster-wide: more than")

    def test_lease_name_mismatch(self) -> None:
        self.b.edit("templates/leader-election-rbac.yaml", 'resourceNames: [{{ include "mtl-operator.fullname" . | quote }}]', 'resourceNames: ["mtl-operator"]')
        self.assertFails(r"resourceNames \['mtl-operator'\] lack the Deployment's --lease-name 'mtl-mtl-operator'")

    def test_create_restricted_by_name(self) -> None:
        self.b.edit("templates/leader-election-rbac.yaml", 'verbs: ["get", "update"]', 'verbs: ["get", "create", "update"]')
        self.b.edit("templates/leader-election-rbac.yaml", '    verbs: ["create"]\n', '    verbs: ["get"]\n')
        self.assertFails(r"resourceNames cannot authorize create", r"does not grant create on leases")

    def test_leases_cluster_wide(self) -> None:
        self.b.edit("templates/clusterrole.yaml", '    verbs: ["create", "patch"]\n',
                    '    verbs: ["create", "patch"]\n  - apiGroups: ["coordination.k8s.io"]\n'
                    '    resources: ["leases"]\n    verbs: ["get"]\n')
        self.assertFails(r"grants get on leases \(apiGroup 'coordination\.k8s\.io'\) cluster-wide: more than")

    def test_binding_to_the_wrong_service_account(self) -> None:
        self.b.edit("templates/clusterrolebinding.yaml", 'name: {{ include "mtl-operator.serviceAccountName" . }}', "name: someone-else")
        self.assertFails(r"clusterrolebinding\.yaml.*does not bind the operator's ServiceAccount")

    def test_broken_yaml(self) -> None:
        self.b.edit("templates/service.yaml", "  type: ClusterIP", "   type: ClusterIP")
        self.assertFails(r"templates/service\.yaml \[values: defaults\] document 1: rendered YAML does not parse")

    def test_bad_nindent(self) -> None:
        self.b.edit("templates/deployment.yaml", "toYaml .Values.resources | nindent 12", "toYaml .Values.resources | nindent 6")
        self.assertFails(r"deployment\.yaml")

    def test_template_syntax(self) -> None:
        self.b.edit("templates/servicemonitor.yaml", "{{- end }}\n", "", count=1)
        self.assertFails(r"servicemonitor\.yaml: template syntax")

    def test_service_selects_nothing(self) -> None:
        self.b.edit("templates/service.yaml", '{{- include "mtl-operator.selectorLabels" . | nindent 4 }}', "app: nothing")
        self.assertFails(r"service\.yaml.*Service selector .* does not select the operator pods")

    def test_metrics_addr_not_from_values(self) -> None:
        self.b.edit("templates/deployment.yaml", '{{ printf "0.0.0.0:%v" .Values.metrics.port | quote }}', '"0.0.0.0:9090"')
        self.assertFails(r"lack --metrics-addr 0\.0\.0\.0:8080")

    def test_probe_path(self) -> None:
        self.b.edit("templates/deployment.yaml", "path: /readyz", "path: /ready")
        self.assertFails(r"readinessProbe should GET /readyz")

    def test_removed_policy_flag(self) -> None:
        self.b.edit("templates/deployment.yaml", "            - --policy-file=",
                    "            - --allowed-image-prefix=gcr.io/\n            - --policy-file=")
        self.b.edit("templates/deployment.yaml", "- name: RUST_LOG",
                    "- name: MTL_ALLOWED_IMAGE_PREFIXES\n              value: gcr.io/\n            - name: RUST_LOG")
        self.assertFails(r"args pass --allowed-image-prefix, which the operator no longer has",
                         r"env MTL_ALLOWED_IMAGE_PREFIXES: the operator no longer reads")

    def test_policy_configmap_not_the_values(self) -> None:
        self.b.edit("templates/policy-configmap.yaml", "{{- toYaml .Values.policy | nindent 4 }}", "{}")
        self.assertFails(r"policy-configmap\.yaml \[values: all-toggles-on\].*policy\.yaml is \{\}, not the values' policy",
                         r"policy-configmap\.yaml \[values: existing-sa-digest-override\].*policy\.yaml is \{\}")

    def test_existing_secret_overwritten(self) -> None:
        # The Secret rendered under the name of the user's own: helm would take it over and replace the key.
        self.b.edit("templates/accepted-spec-key-secret.yaml", "{{- if not .Values.acceptedSpecKey.existingSecret }}", "{{- if true }}")
        self.assertFails(r"\[values: existing-sa-digest-override\].*Secret mtl-accepted-spec-key rendered although "
                         r"acceptedSpecKey\.existingSecret is set")

    def test_policy_empty_list_dropped(self) -> None:
        # [] allows nothing: a template that leaves empty lists out turns them into "anything".
        self.b.edit("templates/policy-configmap.yaml", "{{- toYaml .Values.policy | nindent 4 }}",
                    "{{- range $k, $v := .Values.policy }}{{ if $v }}\n    {{ $k }}: {{ toYaml $v | nindent 6 }}{{ end }}{{ end }}")
        self.assertFails(r"\[values: existing-sa-digest-override\].*policy\.yaml is .*not the values' policy "
                         r"\{'serviceAccounts': \[\], 'vertexAI': \{'projects': \[\]\}\}")

    def test_policy_checksum(self) -> None:
        self.b.edit("templates/deployment.yaml", "toYaml .Values.policy | sha256sum", "toYaml .Values.podSecurity | sha256sum")
        self.assertFails(r"checksum/policy is .*not the sha256 of the policy .*would not roll the pods")

    def test_policy_unknown_field(self) -> None:
        # The operator refuses to start on a field it does not know: catch a typo before a deploy.
        check_chart.SCENARIOS["typo"] = {"policy": {"imagePrefix": ["gcr.io/"], "maxWorkers": "4",
                                                    "vertexAI": {"project": ["p"]}}}
        try:
            self.assertFails(r"\[values: typo\]: policy\.imagePrefix is not a MultiTaskTrainingPolicy spec field",
                             r"policy\.maxWorkers is '4', not a whole number",
                             r"policy\.vertexAI\.project is not a field")
        finally:
            del check_chart.SCENARIOS["typo"]

    def test_policy_file_not_mounted(self) -> None:
        self.b.edit("templates/deployment.yaml", "mountPath: /etc/mtl-operator/policy\n", "mountPath: /etc/mtl/policy\n")
        self.assertFails(r"--policy-file /etc/mtl-operator/policy/policy\.yaml lies in no volumeMount")

    def test_policy_mount_writable(self) -> None:
        self.b.edit("templates/deployment.yaml", "mountPath: /etc/mtl-operator/policy\n              readOnly: true",
                    "mountPath: /etc/mtl-operator/policy")
        self.assertFails(r"volumeMount 'policy' of --policy-file is not readOnly")

    def test_policy_file_from_the_wrong_configmap(self) -> None:
        self.b.edit("templates/deployment.yaml", 'name: {{ include "mtl-operator.fullname" . }}-policy', "name: policy")
        self.assertFails(r"--policy-file reads configMap 'policy' key 'policy\.yaml', not ConfigMap 'mtl-mtl-operator-policy'")

    def test_volume_types_flag(self) -> None:
        self.b.edit("templates/deployment.yaml", '{{ join "," . | quote }}', '{{ join " " . | quote }}')
        self.assertFails(r"--allow-volume-types \['nfs hostPath'\], podSecurity\.extraVolumeTypes says \['nfs,hostPath'\]")

    def test_volume_types_flag_when_empty(self) -> None:
        self.b.edit("templates/deployment.yaml", "{{- with .Values.podSecurity.extraVolumeTypes }}", "{{- with $.Values }}")
        self.b.edit("templates/deployment.yaml", '{{ join "," . | quote }}', '{{ join "," .podSecurity.extraVolumeTypes | quote }}')
        self.assertFails(r"\[values: defaults\].*--allow-volume-types \[''\], podSecurity\.extraVolumeTypes says \[\]")

    def test_accepted_spec_key_short(self) -> None:
        self.b.edit("templates/accepted-spec-key-secret.yaml", "(randAlphaNum 64 | b64enc)", "(randAlphaNum 8 | b64enc)")
        self.assertFails(r"accepted-spec-key-secret\.yaml.*data\.key holds 8 bytes; the operator wants at least 16")

    def test_accepted_spec_key_not_base64(self) -> None:
        self.b.edit("templates/accepted-spec-key-secret.yaml", "(randAlphaNum 64 | b64enc)", "(randAlphaNum 63)")
        self.assertFails(r"accepted-spec-key-secret\.yaml.*data\.key .* is not base64")

    def test_accepted_spec_key_not_kept(self) -> None:
        self.b.edit("templates/accepted-spec-key-secret.yaml", "    helm.sh/resource-policy: keep\n", "    a: b\n")
        self.assertFails(r"accepted-spec-key-secret\.yaml.*lacks the annotation helm\.sh/resource-policy: keep")

    def test_accepted_spec_key_existing_secret_ignored(self) -> None:
        self.b.edit("templates/deployment.yaml", 'secretName: {{ include "mtl-operator.acceptedSpecKeySecretName" . }}',
                    'secretName: {{ include "mtl-operator.fullname" . }}-accepted-spec-key')
        self.b.edit("templates/accepted-spec-key-secret.yaml", "{{- if not .Values.acceptedSpecKey.existingSecret }}", "{{- if true }}")
        self.b.edit("templates/accepted-spec-key-secret.yaml", '{{- $name := include "mtl-operator.acceptedSpecKeySecretName" . }}',
                    '{{- $name := printf "%s-accepted-spec-key" (include "mtl-operator.fullname" .) }}')
        self.assertFails(r"\[values: existing-sa-digest-override\].*Secret ops-accepted-spec-key rendered although",
                         r"--accepted-spec-key-file reads secret 'ops-accepted-spec-key' key 'key', not Secret 'mtl-accepted-spec-key'")

    def test_accepted_spec_key_wrong_item(self) -> None:
        self.b.edit("templates/deployment.yaml", "              - key: key\n                path: key\n",
                    "              - key: key\n                path: secret\n")
        self.assertFails(r"volume 'accepted-spec-key' of --accepted-spec-key-file has no item at 'key'")

    def test_edit_role_patches_status(self) -> None:
        self.b.edit("templates/aggregated-roles.yaml",
                    '    resources: ["multitasktrainingjobs"]\n    verbs: ["create", "update", "patch", "delete", "deletecollection"]',
                    '    resources: ["multitasktrainingjobs", "multitasktrainingjobs/status"]\n'
                    '    verbs: ["create", "update", "patch", "delete", "deletecollection"]')
        self.assertFails(r"aggregated-roles\.yaml.*ClusterRole mtl-edit grants patch on multitasktrainingjobs/status .*must not write",
                         r"ClusterRole mtl-edit grants update on multitasktrainingjobs/status")

    def test_edit_role_writes_policies(self) -> None:
        self.b.edit("templates/aggregated-roles.yaml", '    verbs: ["create", "update", "patch", "delete", "deletecollection"]\n',
                    '    verbs: ["create", "update", "patch", "delete", "deletecollection"]\n'
                    '  - apiGroups: ["multitask.dev"]\n    resources: ["multitasktrainingpolicies"]\n    verbs: ["update"]\n')
        self.assertFails(r"ClusterRole mtl-edit grants update on multitasktrainingpolicies .*widen their own policy")

    def test_view_role_wildcard(self) -> None:
        self.b.edit("templates/aggregated-roles.yaml",
                    '"multitasktrainingjobs", "multitasktrainingjobs/status", "multitasktrainingpolicies"]', '"*"]')
        self.assertFails(r"aggregated-roles\.yaml.*uses a wildcard in resources",
                         r"ClusterRole mtl-view does not grant get on multitasktrainingpolicies")

    def test_edit_role_without_create(self) -> None:
        self.b.edit("templates/aggregated-roles.yaml", '["create", "update", "patch", "delete", "deletecollection"]',
                    '["update", "patch", "delete"]')
        self.assertFails(r"ClusterRole mtl-edit does not grant create on multitasktrainingjobs \(apiGroup 'multitask\.dev'\)",
                         r"ClusterRole mtl-edit does not grant deletecollection")

    def test_aggregation_labels(self) -> None:
        self.b.edit("templates/aggregated-roles.yaml",
                    '  name: mtl-edit\n  labels:\n    {{- include "mtl-operator.labels" . | nindent 4 }}\n'
                    '    rbac.authorization.k8s.io/aggregate-to-edit: "true"\n    rbac.authorization.k8s.io/aggregate-to-admin: "true"\n',
                    '  name: mtl-edit\n  labels:\n    {{- include "mtl-operator.labels" . | nindent 4 }}\n'
                    '    rbac.authorization.k8s.io/aggregate-to-view: "true"\n')
        self.assertFails(r"ClusterRole mtl-edit lacks the label rbac\.authorization\.k8s\.io/aggregate-to-edit",
                         r"ClusterRole mtl-edit lacks the label rbac\.authorization\.k8s\.io/aggregate-to-admin",
                         r"ClusterRole mtl-edit has the label rbac\.authorization\.k8s\.io/aggregate-to-view: more than")

    def test_aggregated_roles_toggle(self) -> None:
        self.b.edit("templates/aggregated-roles.yaml", "{{- if and .Values.rbac.create .Values.aggregatedRoles.enabled }}",
                    "{{- if .Values.rbac.create }}")
        self.assertFails(r"\[values: existing-sa-digest-override\].*ClusterRole mtl-view rendered although aggregatedRoles\.enabled is false")
        self.b.edit("templates/aggregated-roles.yaml", "{{- if .Values.rbac.create }}", "{{- if false }}")
        self.assertFails(r"\[values: defaults\].*no ClusterRole mtl-edit although aggregatedRoles\.enabled is true")

    def test_aggregated_roles_not_the_operators(self) -> None:
        # Bound to nothing, yet no "not bound" error and no operator grant counted: the copy passes.
        self.assertEqual(self.b.errors(), [])
        self.b.edit("templates/leader-election-rbac.yaml",
                    '  kind: Role\n  name: {{ include "mtl-operator.fullname" . }}-leader-election\nsubjects',
                    "  kind: ClusterRole\n  name: mtl-edit\nsubjects")
        self.assertFails(r"leader-election-rbac\.yaml.*binds mtl-edit, a role for people",
                         r"does not grant get on leases")

    def test_operator_role_aggregated(self) -> None:
        # The operator's grants (pods, everywhere) must not flow into every namespace editor's.
        self.b.edit("templates/clusterrole.yaml", '  labels:\n    {{- include "mtl-operator.labels" . | nindent 4 }}\n',
                    '  labels:\n    {{- include "mtl-operator.labels" . | nindent 4 }}\n'
                    '    rbac.authorization.k8s.io/aggregate-to-edit: "true"\n')
        self.assertFails(r"clusterrole\.yaml.*ClusterRole mtl-mtl-operator carries rbac\.authorization\.k8s\.io/aggregate-to-edit")

    def test_downward_api_env(self) -> None:
        self.b.edit("templates/deployment.yaml", "fieldPath: metadata.name\n", "fieldPath: spec.nodeName\n")
        self.assertFails(r"env POD_NAME is not the downward-API field metadata\.name")

    def test_servicemonitor_toggle(self) -> None:
        self.b.edit("templates/servicemonitor.yaml", "{{- if .Values.metrics.serviceMonitor.enabled }}", "{{- if true }}")
        self.assertFails(r"metrics\.serviceMonitor\.enabled does not toggle the ServiceMonitor")

    PDB_IF = "{{- if and .Values.podDisruptionBudget.enabled (gt (int .Values.replicas) 1) }}"
    PDB_SELECTOR = '{{- include "mtl-operator.selectorLabels" . | nindent 6 }}'

    def test_pdb_selector_mismatch(self) -> None:
        self.b.edit("templates/poddisruptionbudget.yaml", self.PDB_SELECTOR, "app: nothing")
        self.assertFails(r"poddisruptionbudget\.yaml \[values: defaults\].*PodDisruptionBudget selector "
                         r"\{'app': 'nothing'\} does not select the operator pods")

    def test_pdb_selects_more_than_the_deployment(self) -> None:
        # app.kubernetes.io/name alone: every release's operator pods in the namespace.
        self.b.edit("templates/poddisruptionbudget.yaml", self.PDB_SELECTOR,
                    'app.kubernetes.io/name: {{ include "mtl-operator.name" . }}')
        self.assertFails(r"PodDisruptionBudget selector \{'app\.kubernetes\.io/name': 'mtl-operator'\} is not the "
                         r"Deployment's .*would count other pods")

    def test_pdb_min_available_equal_to_replicas(self) -> None:
        self.b.edit("values.yaml", "  minAvailable: 1\n", "  minAvailable: 2\n")
        errors = self.assertFails(r"poddisruptionbudget\.yaml \[values: defaults\].*minAvailable 2 >= replicas 2: "
                                  r"no operator pod could ever be evicted")
        self.assertFalse([e for e in errors if "all-toggles-on" in e], "3 replicas, minAvailable 2 is fine")

    def test_pdb_min_available_not_from_values(self) -> None:
        self.b.edit("templates/poddisruptionbudget.yaml", "minAvailable: {{ .Values.podDisruptionBudget.minAvailable }}",
                    "minAvailable: {{ .Values.replicas }}")
        self.assertFails(r"\[values: defaults\].*minAvailable 2 is not podDisruptionBudget\.minAvailable 1",
                         r"\[values: all-toggles-on\].*minAvailable 3 >= replicas 3")

    def test_pdb_with_one_replica(self) -> None:
        self.b.edit("templates/poddisruptionbudget.yaml", self.PDB_IF, "{{- if .Values.podDisruptionBudget.enabled }}")
        errors = self.assertFails(r"\[values: single-replica\].*PodDisruptionBudget rendered although replicas is 1: "
                                  r"with one replica a PodDisruptionBudget blocks node drains forever",
                                  r"\[values: single-replica\].*minAvailable 1 >= replicas 1")
        self.assertFalse([e for e in errors if "single-replica" not in e], errors)

    def test_pdb_toggle(self) -> None:
        self.b.edit("templates/poddisruptionbudget.yaml", self.PDB_IF, "{{- if gt (int .Values.replicas) 1 }}")
        self.assertFails(r"\[values: existing-sa-digest-override\].*PodDisruptionBudget rendered although "
                         r"podDisruptionBudget\.enabled is false")
        self.b.edit("templates/poddisruptionbudget.yaml", "{{- if gt (int .Values.replicas) 1 }}", "{{- if false }}")
        self.assertFails(r"poddisruptionbudget\.yaml \[values: defaults\]: no PodDisruptionBudget although "
                         r"podDisruptionBudget\.enabled is true and replicas is 2")

    def test_pdb_compares_a_float_with_an_int(self) -> None:
        # values.yaml's 2 is a float64 in Helm; Go's gt refuses to compare it with the literal 1.
        self.b.edit("templates/poddisruptionbudget.yaml", self.PDB_IF,
                    "{{- if and .Values.podDisruptionBudget.enabled (gt .Values.replicas 1) }}")
        self.assertFails(r"poddisruptionbudget\.yaml \[values: defaults\]: render: line \d+: gt: incompatible types "
                         r"for comparison \(float 2, int 1\)")

    def test_notes_without_the_crd_upgrade(self) -> None:
        self.b.edit("templates/NOTES.txt", "  kubectl apply --server-side --force-conflicts -f charts/mtl-operator/crds/\n",
                    "  kubectl apply -f charts/mtl-operator/crds/\n")
        self.assertFails(r"NOTES\.txt \[values: defaults\]: does not tell how to upgrade the CRD multitasktrainingjobs\.yaml "
                         r"\(Helm installs crds/ on first install only, never on upgrade\)",
                         r"NOTES\.txt \[values: defaults\]: does not tell how to upgrade the CRD multitasktrainingpolicies\.yaml")

    def test_notes_apply_the_chart_job_crd_over_extra_volumes(self) -> None:
        self.b.edit("templates/NOTES.txt", "-f charts/mtl-operator/crds/multitasktrainingpolicies.yaml",
                    "-f charts/mtl-operator/crds/")
        errors = self.assertFails(r"NOTES\.txt \[values: all-toggles-on\]: tells to apply the chart's multitasktrainingjobs\.yaml "
                                  r"although podSecurity\.extraVolumeTypes is set")
        self.assertEqual(len(errors), 1, errors)

    def test_chart_yaml(self) -> None:
        self.b.edit("Chart.yaml", "apiVersion: v2", "apiVersion: v1")
        self.assertFails(r"Chart\.yaml: apiVersion must be v2")

    def test_big_number_printed_as_float(self) -> None:
        # Helm prints a float64 value of 1000000 as 1e+06: quote it or the flag gets "1e+06".
        self.b.edit("values.yaml", "podGraceSeconds: 300", "podGraceSeconds: 1000000")
        self.b.edit("templates/deployment.yaml", "- --pod-grace-seconds\n", "- --pod-grace-seconds={{ .Values.podGraceSeconds }}\n")
        self.b.edit("templates/deployment.yaml", "            - {{ .Values.podGraceSeconds | quote }}\n", "")
        errors = self.b.errors()  # the chart still checks out, but the value shows up as Helm would print it
        self.assertEqual(errors, [])
        checker = Checker(self.b.chart, self.b.crds)
        checker.run()
        dep = next(d for _, d in checker.rendered["defaults"] if d["kind"] == "Deployment")
        self.assertIn("--pod-grace-seconds=1e+06", dep["spec"]["template"]["spec"]["containers"][0]["args"])


class RendererSemantics(unittest.TestCase):
    """The Go-template subset behaves like text/template + Sprig for what the chart uses."""

    def render(self, src: str, values: dict | None = None, helpers: str = "") -> str:
        r = Renderer({"t.yaml": src, "_h.tpl": helpers})
        root = {"Values": track(values or {}, ""), "Release": {"Name": "rel", "Namespace": "ns", "Service": "Helm"},
                "Chart": {"Name": "chart", "Version": "1.0.0+x", "AppVersion": "2.0"}}
        return r.render("t.yaml", root)

    def test_trim_markers(self) -> None:
        self.assertEqual(self.render("a:\n  {{- \" b\" }}\nc"), "a: b\nc")
        self.assertEqual(self.render("x {{- 1 -}} \n y"), "x1y")
        self.assertEqual(self.render("{{/* c */}}a\n{{- /* c */ -}}\nb"), "ab")

    def test_if_else_if_else(self) -> None:
        src = "{{ if .Values.a }}A{{ else if .Values.b }}B{{ else }}C{{ end }}"
        self.assertEqual(self.render(src, {"a": 1, "b": 1}), "A")
        self.assertEqual(self.render(src, {"a": 0, "b": "x"}), "B")
        self.assertEqual(self.render(src, {"a": "", "b": []}), "C")

    def test_with_and_range(self) -> None:
        v = {"m": {"k": "v"}, "l": ["x", "y"], "e": {}}
        self.assertEqual(self.render("{{ with .Values.m }}{{ .k }}{{ end }}", v), "v")
        self.assertEqual(self.render("{{ with .Values.e }}no{{ else }}else{{ end }}", v), "else")
        self.assertEqual(self.render("{{ range .Values.l }}[{{ . }}]{{ end }}", v), "[x][y]")
        self.assertEqual(self.render("{{ range $i, $v := .Values.l }}{{ $i }}={{ $v }} {{ end }}", v), "0=x 1=y ")
        self.assertEqual(self.render("{{ range $k, $v := .Values.m }}{{ $k }}:{{ $v }}{{ $.Release.Name }}{{ end }}", v), "k:vrel")

    def test_functions(self) -> None:
        v = {"empty": "", "name": "abc-", "n": 8080}
        self.assertEqual(self.render('{{ default "d" .Values.empty }}', v), "d")
        self.assertEqual(self.render('{{ .Values.empty | default "d" | quote }}', v), '"d"')
        self.assertEqual(self.render('{{ .Values.name | trunc 4 | trimSuffix "-" }}', v), "abc")
        self.assertEqual(self.render('{{ printf "%s-%v" .Release.Name .Values.n }}', v), "rel-8080")
        self.assertEqual(self.render('{{ .Chart.Version | replace "+" "_" }}', v), "1.0.0_x")
        self.assertEqual(self.render('{{ toYaml .Values.m | nindent 2 }}', {"m": {"b": 1, "a": [1]}}), "\n  a:\n  - 1\n  b: 1")
        self.assertEqual(self.render('{{ if and .Values.n (not .Values.empty) }}y{{ end }}', v), "y")
        self.assertEqual(self.render('{{ if contains "b" .Values.name }}y{{ end }}', v), "y")

    def test_include_and_variables(self) -> None:
        helpers = '{{- define "x.name" -}}{{ .Release.Name }}-{{ .Chart.Name }}{{- end }}'
        self.assertEqual(self.render('{{ $n := include "x.name" . }}{{ $n }}/{{ $n | upper }}', helpers=helpers),
                         "rel-chart/REL-CHART")

    def test_errors(self) -> None:
        with self.assertRaisesRegex(check_chart.CheckError, r"values\.yaml has no a\.missing"):
            self.render("{{ .Values.a.missing }}", {"a": {"b": 1}})
        with self.assertRaisesRegex(check_chart.CheckError, r"undefined template"):
            self.render('{{ include "nope" . }}')
        with self.assertRaisesRegex(check_chart.CheckError, r"use toYaml"):
            self.render("{{ .Values.a }}", {"a": {"b": 1}})
        r = Renderer({"t.yaml": "a\n{{ if .Values.a }}x"})
        self.assertRegex(str(r.syntax_errors[0]), r"t\.yaml: template syntax: line 2: \{\{ if \.Values\.a \}\} has no \{\{ end \}\}")
        with self.assertRaisesRegex(check_chart.CheckError, r"line 2: .*undefined variable \$x"):
            self.render("{{ if true }}{{ $x := 1 }}{{ end }}\n{{ $x }}")

    def test_helm_and_secret_functions(self) -> None:
        self.assertEqual(self.render('{{ lookup "v1" "Secret" "ns" "x" | toYaml }}'), "{}")
        self.assertEqual(self.render('{{ dig "data" "key" "none" (lookup "v1" "Secret" "ns" "x") }}'), "none")
        self.assertEqual(self.render('{{ dig "data" "key" "none" .Values.s }}', {"s": {"data": {"key": "k"}}}), "k")
        self.assertEqual(self.render('{{ dig "data" "key" "none" .Values.s }}', {"s": {"data": {}}}), "none")
        with self.assertRaisesRegex(check_chart.CheckError, r"dig through a str"):
            self.render('{{ dig "data" "key" "none" .Values.s }}', {"s": {"data": "x"}})
        key = self.render("{{ randAlphaNum 64 }}")
        self.assertRegex(key, r"^[A-Za-z0-9]{64}$")
        self.assertEqual(self.render("{{ randAlphaNum 64 }}"), key, "deterministic in the checker")
        self.assertEqual(self.render('{{ "hello" | b64enc }}'), "aGVsbG8=")
        self.assertEqual(self.render('{{ "hello" | sha256sum }}'),
                         "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        self.assertEqual(self.render('{{ join "," .Values.l }}', {"l": ["a", "b", 3]}), "a,b,3")
        self.assertEqual(self.render('{{ join "," .Values.l }}', {"l": []}), "")

    def test_comparisons(self) -> None:
        v = {"n": 2}  # a float64, as Helm reads values.yaml
        self.assertEqual(self.render("{{ if gt (int .Values.n) 1 }}y{{ else }}n{{ end }}", v), "y")
        self.assertEqual(self.render("{{ if le (int .Values.n) 1 }}y{{ else }}n{{ end }}", v), "n")
        self.assertEqual(self.render("{{ if lt .Values.n 2.5 }}y{{ end }}", v), "y")
        self.assertEqual(self.render('{{ if ge "b" "a" }}y{{ end }}'), "y")
        with self.assertRaisesRegex(check_chart.CheckError, r"gt: incompatible types for comparison \(float 2, int 1\)"):
            self.render("{{ gt .Values.n 1 }}", v)
        with self.assertRaisesRegex(check_chart.CheckError, r"lt: invalid type for comparison"):
            self.render("{{ lt true 1 }}")

    def test_go_float(self) -> None:
        self.assertEqual([go_float(f) for f in (300.0, 8080.0, 1e6, 1234567.0, 0.5, 1e-5)],
                         ["300", "8080", "1e+06", "1.234567e+06", "0.5", "1e-05"])


if __name__ == "__main__":
    unittest.main()
