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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_chart  # noqa: E402
from check_chart import Checker, Renderer, go_float, track  # noqa: E402

CHART = check_chart.DEFAULT_CHART
CRD = check_chart.DEFAULT_CRD


class BrokenChart:
    """A temporary copy of charts/mtl-operator and crds/multitasktrainingjobs.yaml to break."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        self.chart = root / "charts" / "mtl-operator"
        self.crd = root / "crds" / "multitasktrainingjobs.yaml"
        shutil.copytree(CHART, self.chart)
        self.crd.parent.mkdir(parents=True)
        shutil.copyfile(CRD, self.crd)

    def edit(self, rel: str, old: str, new: str, count: int = 1) -> None:
        path = self.chart / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, count))

    def errors(self) -> list[str]:
        return Checker(self.chart, self.crd).run()

    def close(self) -> None:
        self.tmp.cleanup()


class RealChart(unittest.TestCase):
    def test_chart_passes(self) -> None:
        self.assertEqual(Checker(CHART, CRD).run(), [])

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
                              "--crd", str(self.b.crd)], capture_output=True, text=True)
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

    def test_policy_value_not_passed(self) -> None:
        self.b.edit("templates/deployment.yaml", "- --allowed-vertex-project", "- --allowed-vertex-projects")
        self.assertTrue(any("--allowed-vertex-project" in e for e in self.b.errors()), self.b.errors())

    def test_downward_api_env(self) -> None:
        self.b.edit("templates/deployment.yaml", "fieldPath: metadata.name\n", "fieldPath: spec.nodeName\n")
        self.assertFails(r"env POD_NAME is not the downward-API field metadata\.name")

    def test_servicemonitor_toggle(self) -> None:
        self.b.edit("templates/servicemonitor.yaml", "{{- if .Values.metrics.serviceMonitor.enabled }}", "{{- if true }}")
        self.assertFails(r"metrics\.serviceMonitor\.enabled does not toggle the ServiceMonitor")

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
        checker = Checker(self.b.chart, self.b.crd)
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

    def test_go_float(self) -> None:
        self.assertEqual([go_float(f) for f in (300.0, 8080.0, 1e6, 1234567.0, 0.5, 1e-5)],
                         ["300", "8080", "1e+06", "1.234567e+06", "0.5", "1e-05"])


if __name__ == "__main__":
    unittest.main()
