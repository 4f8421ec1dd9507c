"""The Helm chart (helm/sandbox-runtime), rendered by the real `helm template` (Helm 3 and Helm 4, which
scripts/install puts in .venv/helm) with its defaults and with variations. Every manifest is parsed and
checked against Kubernetes' own JSON schemas (kubernetes-validate, strict: no unknown fields) for the
oldest and the newest version the chart is meant for, and for what the service needs: selectors that
select the pods, probes on /health at the port the service listens on, the measured securityContext,
writable folders under a read-only root, and a ConfigMap holding a template our loader loads."""

from __future__ import annotations

import re
import subprocess
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import REPO, TEST_TEMPLATE, ServiceProcess
from prometheus_client.parser import text_string_to_metric_families

from runtime_api.template import load_template

CHART = REPO / "helm" / "sandbox-runtime"
HELM = {major: REPO / ".venv" / "helm" / f"v{major}" / "helm" for major in (3, 4)}
KUBERNETES = ("1.30", "1.37")  # Chart.yaml's kubeVersion floor, and the newest schemas we have
RELEASE = "demo"
NAMESPACE = "lambdas"
# What bubblewrap and the service need in a container, each one measured (docs/deployment.md).
CAPABILITIES = {"SYS_ADMIN", "SYS_PTRACE", "SETUID", "SETGID", "KILL", "CHOWN", "DAC_OVERRIDE", "FOWNER"}
EXAMPLE_FUNCTIONS = {"hello", "echo", "api", "error", "timeout"}
MONITORING_KINDS = {"ServiceMonitor"}  # a CRD of the Prometheus Operator: no schema in Kubernetes' own


def helm(*args: str, major: int = 4) -> subprocess.CompletedProcess[str]:
    binary = HELM[major]
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run scripts/install")
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)


def render(values: dict[str, Any] | None = None, *args: str, tmp_path: Path, major: int = 4) -> list[dict]:
    """The chart's manifests for these values, parsed; each checked against Kubernetes' schemas."""
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values or {}))
    done = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(values_file), *args, major=major)
    assert done.returncode == 0, done.stderr
    manifests = [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]
    for manifest in manifests:
        assert {"apiVersion", "kind", "metadata"} <= manifest.keys(), manifest
        if manifest["kind"] not in MONITORING_KINDS:
            for version in KUBERNETES:
                kubernetes_validate.validate(manifest, version, strict=True)
    return manifests


def refusal(values: dict[str, Any], tmp_path: Path) -> str:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    done = helm("template", RELEASE, str(CHART), "-f", str(values_file))
    assert done.returncode != 0, f"rendered, but should have been refused: {values}"
    return done.stderr


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    kinds = [m["kind"] for m in manifests]
    assert len(kinds) == len(set(kinds)), kinds
    return {m["kind"]: m for m in manifests}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env(deployment: dict) -> dict[str, str]:
    variables = container(deployment)["env"]
    names = [v["name"] for v in variables]
    assert len(names) == len(set(names)), names
    return {v["name"]: v["value"] for v in variables if "value" in v}


def mounted_configmap_file(deployment: dict, path: str) -> tuple[str, str]:
    """(ConfigMap name, key) of the file the pod sees at `path`."""
    spec = deployment["spec"]["template"]["spec"]
    (mount,) = [m for m in container(deployment)["volumeMounts"] if m["mountPath"] == path]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    return volume["configMap"]["name"], mount["subPath"]


def template_argument(deployment: dict) -> str:
    args = container(deployment)["args"]
    return args[args.index("--template") + 1]


def loads(template_text: str, tmp_path: Path, **overrides: str) -> set[str]:
    """The function names our loader reads from `template_text`, laid out as in the image (/app holds
    template.yaml and functions/)."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "functions").symlink_to(REPO / "functions")
    (app / "template.yaml").write_text(template_text)
    return {function.name for function in load_template(app / "template.yaml", parameter_overrides=overrides).functions}


# -- defaults ------------------------------------------------------------------------------------------


def test_defaults_render_the_service_and_nothing_optional(tmp_path):
    kinds = by_kind(render(tmp_path=tmp_path))
    assert set(kinds) == {"ConfigMap", "Service", "Deployment", "PodDisruptionBudget"}
    for manifest in kinds.values():
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/name"] == "sandbox-runtime"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    assert kinds["Deployment"]["spec"]["replicas"] == 1


def test_selectors_select_the_pods(tmp_path):
    kinds = by_kind(render(tmp_path=tmp_path))
    deployment = kinds["Deployment"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector and selector.items() <= pod_labels.items()
    assert kinds["Service"]["spec"]["selector"] == selector
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector


def test_probes_and_service_reach_the_port_the_service_listens_on(tmp_path):
    for port in (8000, 9090):
        kinds = by_kind(render({"containerPort": port}, tmp_path=tmp_path))
        deployment = kinds["Deployment"]
        main = container(deployment)
        (http,) = main["ports"]
        assert http["containerPort"] == port == int(env(deployment)["SANDBOX_PORT"])
        assert env(deployment)["SANDBOX_HOST"] == "0.0.0.0"  # reachable from the Service, not only the pod
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert main[probe]["httpGet"] == {"path": "/health", "port": http["name"]}, probe
        (service_port,) = kinds["Service"]["spec"]["ports"]
        assert service_port["targetPort"] == http["name"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"


def test_security_context_is_the_measured_minimum(tmp_path):
    deployment = by_kind(render(tmp_path=tmp_path))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    security = container(deployment)["securityContext"]
    assert pod["hostUsers"] is False  # the pod's own user namespace: container root is not node root
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == CAPABILITIES
    assert security["seccompProfile"] == {"type": "Unconfined"}
    assert security["appArmorProfile"] == {"type": "Unconfined"}
    assert security["procMount"] == "Unmasked"
    assert security.get("privileged") is not True
    assert pod["automountServiceAccountToken"] is False
    # Sandbox uids must exist in the pod's user namespace (0-65535).
    first, last = (int(n) for n in env(deployment)["SANDBOX_UID_RANGE"].split("-"))
    assert 0 < first <= last < 65536
    # No `command`: the image's entrypoint (docker-entrypoint.sh, which makes the cgroups writable) runs.
    assert "command" not in container(deployment)
    assert container(deployment)["args"][:2] == ["sandbox-runtime", "serve"]


def test_read_only_root_keeps_every_folder_the_service_writes_writable(tmp_path):
    deployment = by_kind(render(tmp_path=tmp_path))["Deployment"]
    assert container(deployment)["securityContext"]["readOnlyRootFilesystem"] is True
    settings = env(deployment)
    writable = {m["mountPath"] for m in container(deployment)["volumeMounts"] if not m.get("readOnly")}
    assert {"/tmp", settings["SANDBOX_CACHE_DIR"], settings["SANDBOX_DATA_DIR"]} <= writable
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]  # no persistence by default


def test_grace_period_covers_the_drain_deadline(tmp_path):
    deployment = by_kind(render({"shutdownTimeoutSeconds": 60}, tmp_path=tmp_path))["Deployment"]
    assert env(deployment)["SANDBOX_SHUTDOWN_TIMEOUT"] == "60"
    sleep = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    # docs/deployment.md: a stop takes SANDBOX_SHUTDOWN_TIMEOUT plus about 7 s, after the preStop sleep.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60 + int(sleep[1]) + 7


def test_default_template_is_the_bundled_one_and_loads(tmp_path):
    kinds = by_kind(render(tmp_path=tmp_path))
    deployment, configmap = kinds["Deployment"], kinds["ConfigMap"]
    path = template_argument(deployment)
    name, key = mounted_configmap_file(deployment, path)
    assert name == configmap["metadata"]["name"]
    text = configmap["data"][key]
    bundled = (REPO / "template.yaml").read_text().rstrip("\n")
    assert text == bundled, "helm/sandbox-runtime/files/template.yaml is no longer the bundled template.yaml"
    assert loads(text, tmp_path) == EXAMPLE_FUNCTIONS
    # Mounted where the image keeps the example code, so its relative CodeUri resolve there.
    assert Path(path).parent == Path(_dockerfile_workdir())


def _dockerfile_workdir() -> str:
    (workdir,) = re.findall(r"^WORKDIR\s+(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    return workdir


def test_chart_deploys_this_release():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


# -- variations ------------------------------------------------------------------------------------------


def test_custom_template_with_parameters(tmp_path):
    custom = tmp_path / "custom.yaml"
    custom.write_text(
        "Transform: AWS::Serverless-2016-10-31\n"
        "Parameters:\n  Stage: {Type: String, Default: dev}\n"
        "Resources:\n  Greeter:\n    Type: AWS::Serverless::Function\n    Properties:\n"
        "      FunctionName: !Sub 'greet-${Stage}'\n      Runtime: python3.11\n      Handler: app.handler\n"
        "      InlineCode: |\n        def handler(event, context):\n            return 'hi'\n"
    )
    values = {"template": {"directory": "/srv/app", "fileName": "sam.yaml", "parameterOverrides": {"Stage": "prod"}}}
    kinds = by_kind(render(values, "--set-file", f"template.content={custom}", tmp_path=tmp_path))
    deployment, configmap = kinds["Deployment"], kinds["ConfigMap"]
    assert template_argument(deployment) == "/srv/app/sam.yaml"
    args = container(deployment)["args"]
    assert args[args.index("--parameter-overrides") + 1] == "Stage=prod"
    _, key = mounted_configmap_file(deployment, "/srv/app/sam.yaml")
    text = configmap["data"][key]
    assert text == custom.read_text().rstrip("\n")
    assert loads(text, tmp_path, Stage="prod") == {"greet-prod"}
    default = by_kind(render(tmp_path=tmp_path))["Deployment"]
    checksum = "checksum/template"
    assert (
        deployment["spec"]["template"]["metadata"]["annotations"][checksum]
        != default["spec"]["template"]["metadata"]["annotations"][checksum]
    )  # a new template rolls the pods


def _exposed_metrics(service: ServiceProcess) -> set[str]:
    """The metric names the running service's GET /metrics serves."""
    with urllib.request.urlopen(f"{service.url}/metrics", timeout=10) as response:
        return {family.name for family in text_string_to_metric_families(response.read().decode())}


def test_autoscaling_on_invocations_in_flight(tmp_path, start_service):
    values = {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 7}}
    kinds = by_kind(render(values, tmp_path=tmp_path))
    deployment, hpa = kinds["Deployment"], kinds["HorizontalPodAutoscaler"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == (deployment["apiVersion"], deployment["kind"])
    assert target["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] in _exposed_metrics(start_service(TEST_TEMPLATE))
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "8"}


def test_autoscaling_on_cpu_as_the_fallback(tmp_path):
    values = {"autoscaling": {"enabled": True, "inFlight": {"enabled": False}, "cpu": {"enabled": True}}}
    hpa = by_kind(render(values, tmp_path=tmp_path))["HorizontalPodAutoscaler"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric == {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
    }
    none = {"autoscaling": {"enabled": True, "inFlight": {"enabled": False}}}
    assert "needs a metric" in refusal(none, tmp_path)
    no_request = {"autoscaling": {"enabled": True, "cpu": {"enabled": True}}, "resources": {"requests": {"cpu": None}}}
    assert "resources.requests.cpu" in refusal(no_request, tmp_path)


def test_replicas_without_autoscaling(tmp_path):
    kinds = by_kind(render({"replicaCount": 3}, tmp_path=tmp_path))
    assert "HorizontalPodAutoscaler" not in kinds
    assert kinds["Deployment"]["spec"]["replicas"] == 3


def test_disruption_budget(tmp_path):
    assert "PodDisruptionBudget" not in by_kind(render({"podDisruptionBudget": {"enabled": False}}, tmp_path=tmp_path))
    pdb = by_kind(render({"podDisruptionBudget": {"maxUnavailable": "25%"}}, tmp_path=tmp_path))["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == "25%"


def test_resources(tmp_path):
    resources = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}}
    deployment = by_kind(render({"resources": resources}, tmp_path=tmp_path))["Deployment"]
    assert container(deployment)["resources"] == resources


def test_persistence_keeps_the_data_folder_for_one_replica(tmp_path):
    kinds = by_kind(render({"persistence": {"enabled": True, "size": "5Gi"}}, tmp_path=tmp_path))
    claim, deployment = kinds["PersistentVolumeClaim"], kinds["Deployment"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one ReadWriteOnce volume
    existing = by_kind(render({"persistence": {"enabled": True, "existingClaim": "mine"}}, tmp_path=tmp_path))
    assert "PersistentVolumeClaim" not in existing
    volumes = {v["name"]: v for v in existing["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "mine"
    for shared in ({"replicaCount": 2}, {"autoscaling": {"enabled": True}}):
        assert "never share" in refusal({"persistence": {"enabled": True}, **shared}, tmp_path)


def test_sticky_sessions_by_client_address(tmp_path):
    service = by_kind(render({"service": {"sessionAffinity": "ClientIP"}}, tmp_path=tmp_path))["Service"]
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert service["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 10800


def test_service_monitor(tmp_path):
    values = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}, "podAnnotations": False}}
    kinds = by_kind(render(values, tmp_path=tmp_path))
    monitor, service = kinds["ServiceMonitor"], kinds["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert "prometheus.io/scrape" not in kinds["Deployment"]["spec"]["template"]["metadata"]["annotations"]


def test_without_user_namespaces_only_privileged_works(tmp_path):
    assert "needs hostUsers: false" in refusal({"hostUsers": True}, tmp_path)
    values = {"hostUsers": True, "securityContext": {"privileged": True}, "env": {"SANDBOX_UID_RANGE": "200000-265535"}}
    deployment = by_kind(render(values, tmp_path=tmp_path))["Deployment"]
    security = container(deployment)["securityContext"]
    assert security["privileged"] is True
    assert "procMount" not in security  # Kubernetes refuses Unmasked with hostUsers: true
    assert deployment["spec"]["template"]["spec"]["hostUsers"] is True


def test_refused_settings(tmp_path):
    assert "below 65536" in refusal({"env": {"SANDBOX_UID_RANGE": "200000-265535"}}, tmp_path)
    assert "set by the chart" in refusal({"env": {"SANDBOX_PORT": "9000"}}, tmp_path)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"autoscaling": {"enabled": True, "cpu": {"enabled": True}}, "metrics": {"serviceMonitor": {"enabled": True}}},
    ],
)
def test_helm_3_and_4_render_the_same(values, tmp_path):
    assert render(values, tmp_path=tmp_path, major=3) == render(values, tmp_path=tmp_path, major=4)


def test_lint_strict():
    for major in HELM:
        done = helm("lint", "--strict", str(CHART), major=major)
        assert done.returncode == 0, done.stdout + done.stderr
