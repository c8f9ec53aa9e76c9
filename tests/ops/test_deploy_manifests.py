"""deploy/: the Kubernetes manifests pass the Kubernetes API schemas (kubernetes-validate, strict),
the compose file passes the Compose specification schema (check-jsonschema), the Dockerfile passes
hadolint, and the pieces agree with each other (labels, ports, probes, names, mounted paths)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from .conftest import DEPLOY

K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
REPO = DEPLOY.parent
METRICS_PORT = 9465
CUSTOM_RESOURCES = {"ServiceMonitor"}  # CRDs: no upstream schema, checked field by field below
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())


def tool(name: str) -> str:
    """A validator installed in this virtual environment (the `test` extra)."""
    return str(Path(sys.executable).with_name(name))


def manifests() -> dict[str, dict]:
    """``kind/name`` -> resource, for every document under deploy/k8s but the kustomization."""
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version):
    checked, errors = 0, []
    for name, resource in manifests().items():
        if resource["kind"] in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {exc.message} at {'.'.join(map(str, exc.path))}")
        checked += 1
    assert not errors, f"Kubernetes {version}:\n" + "\n".join(errors)
    assert checked >= 7


def test_schema_validation_catches_mistakes():
    deployment = manifests()["Deployment/stream-recs-worker"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_worker_deployment_fits_the_worker():
    resources = manifests()
    deployment = resources["Deployment/stream-recs-worker"]
    config = resources["ConfigMap/stream-recs-config"]["data"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert 1 <= spec["replicas"] <= int(config["STREAM_RECS_PARTITIONS"])
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert config["STREAM_RECS_METRICS_HOST"] == "0.0.0.0"
    assert int(config["STREAM_RECS_METRICS_PORT"]) == METRICS_PORT
    assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"configMapRef": {"name": "stream-recs-config"}} in container["envFrom"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["data"] == config["STREAM_RECS_DATA_DIR"]
    assert set(mounts) == {volume["name"] for volume in pod["volumes"]}
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert all(f"PersistentVolumeClaim/{claim}" in resources for claim in claims)
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 0, "a surge pod finds no free partition"


def test_service_and_monitor_select_the_workers():
    resources = manifests()
    pod_labels = resources["Deployment/stream-recs-worker"]["spec"]["template"]["metadata"]["labels"]
    service = resources["Service/stream-recs"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["publishNotReadyAddresses"] is True  # unready workers' metrics still count
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", METRICS_PORT, "metrics")
    monitor = resources["ServiceMonitor/stream-recs"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert f'up{{job="{service["metadata"]["name"]}"}}' in alerts  # the Operator's job label
    assert all(r["metadata"].get("namespace", "stream-recs") == "stream-recs" for r in resources.values())


def test_network_policy_admits_only_prometheus_to_the_metrics_port():
    resources = manifests()
    pod = resources["Deployment/stream-recs-worker"]["spec"]["template"]
    policy = resources["NetworkPolicy/stream-recs-worker"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert "Ingress" in policy["policyTypes"]
    (rule,) = policy["ingress"]
    (peer,) = rule["from"]  # namespace AND pods in one peer: as two peers, either would do
    assert {"namespaceSelector", "podSelector"} <= peer.keys()
    assert peer["podSelector"]["matchLabels"] and peer["namespaceSelector"]["matchLabels"]
    (container,) = pod["spec"]["containers"]
    served = {port["name"]: port["containerPort"] for port in container["ports"]}
    (port,) = rule["ports"]
    assert served.get(port["port"], port["port"]) == METRICS_PORT and served == {"metrics": METRICS_PORT}


def test_kustomization_lists_the_manifests():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"servicemonitor.yaml"}, "servicemonitor.yaml is opt-in (needs the CRD)"
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return
    built = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    assert len(list(yaml.safe_load_all(built.stdout))) == len(listed)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification():
    done = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_wires_kafka_workers_prometheus_and_grafana():
    services = compose()["services"]
    assert set(services) == {"kafka", "topics", "worker", "prometheus", "grafana"}
    kafka = services["kafka"]
    pinned = re.search(r"<kafka.version>(.+)</kafka.version>", (DEPLOY / "kafka" / "pom.xml").read_text())[1]
    assert kafka["image"] == f"apache/kafka:{pinned}", "the same broker version as the embedded one"
    worker = services["worker"]
    env = worker["environment"]
    assert env["STREAM_RECS_METRICS_HOST"] == "0.0.0.0"
    internal = {name: script_default(f"KAFKA_INTERNAL_{name}") for name in ("HOST", "PORT")}
    assert env["STREAM_RECS_BOOTSTRAP_SERVERS"] == f"{internal['HOST']}:{internal['PORT']}"
    assert kafka["hostname"] == internal["HOST"]
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["command"] == ["stream-recs", "topics", "apply"]
    assert services["topics"]["environment"] == {k: v for k, v in env.items() if k.startswith("STREAM_RECS_")}
    assert (DEPLOY / worker["build"]["context"] / worker["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert f"AS {worker['build']['target']}" in DOCKERFILE.read_text()
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0]
    (discovery,) = scrape["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and discovery["port"] == int(env["STREAM_RECS_METRICS_PORT"])
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_dir(), f"{name}: {source} does not exist"


ENTRYPOINT = DEPLOY / "kafka" / "compose-entrypoint.sh"


def script_default(variable: str) -> str:
    """The default the compose Kafka entrypoint gives ``variable``."""
    return re.search(rf"\${{{variable}:-([^}}]+)}}", ENTRYPOINT.read_text())[1]


def published(service: dict) -> list[tuple[str, ...]]:
    """(host address, host port, container port) of each published port."""
    return [tuple(port.split(":")) for port in service.get("ports", [])]


def test_compose_publishes_nothing_unauthenticated():
    services = compose()["services"]
    for name, service in services.items():
        for address, *_ in published(service):
            assert address == "127.0.0.1", f"{name}: published beyond the host's loopback"
    kafka = services["kafka"]
    assert kafka["entrypoint"][-1] == "/etc/stream-recs/compose-entrypoint.sh"
    assert f"./kafka/{ENTRYPOINT.name}:{kafka['entrypoint'][-1]}:ro" in kafka["volumes"]
    script = ENTRYPOINT.read_text()
    protocols = dict(re.findall(r"(\w+):(\w+)", re.search(r"listener.security.protocol.map=(.+)", script)[1]))
    bound = dict(re.findall(r"(\w+)://([^:,]+):", re.search(r"^listeners=(.+)$", script, re.M)[1]))
    for listener, protocol in protocols.items():
        assert protocol == "SASL_PLAINTEXT" or bound[listener] == "127.0.0.1", (
            f"{listener}: {protocol} on {bound[listener]}"
        )
    host_port = script_default("KAFKA_HOST_PORT")  # advertised as localhost:<it>
    assert published(kafka) == [("127.0.0.1", host_port, host_port)]
    assert "SASL_PLAINTEXT" in protocols.values() and "sasl.enabled.mechanisms=SCRAM-SHA-512" in script
    env = services["worker"]["environment"]
    assert env["STREAM_RECS_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["STREAM_RECS_SECURITY_SASL_MECHANISM"] == "SCRAM-SHA-512"
    for key in ("STREAM_RECS_SECURITY_SASL_USERNAME", "STREAM_RECS_SECURITY_SASL_PASSWORD"):
        assert kafka["environment"][key] == env[key], f"{key}: the broker's user is the workers'"
    assert not any("lifecycle" in arg or "admin-api" in arg for arg in services["prometheus"]["command"])
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_compose_secrets_have_no_defaults_and_stay_out_of_git():
    text = COMPOSE.read_text()
    secrets = re.findall(r"\$\{(\w*PASSWORD\w*)(:?[-?])?", text)
    assert {name for name, _ in secrets} == {"KAFKA_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
    assert all(mode == ":?" for _, mode in secrets), "a password with a default (or none required)"
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=REPO, check=False)
    assert ignored.returncode == 0, "deploy/.env (make secrets) is not git-ignored"
    assert "deploy/.env" in DOCKERFILE.with_name("Dockerfile.dockerignore").read_text().splitlines()
    assert "secrets:" in (REPO / "Makefile").read_text()


@pytest.mark.parametrize(("user", "password", "complaint"), [
    ("stream-recs", "", "PASSWORD must be 16 or more"),
    ("stream-recs", "short-Pw-1", "PASSWORD must be 16 or more"),
    ("stream-recs", "long-enough-but,has=commas]", "PASSWORD must be 16 or more"),
    ("", "a-long-enough-password-1", "USERNAME must be set"),
])
def test_compose_kafka_refuses_a_weak_or_missing_credential(tmp_path, user, password, complaint):
    env = {"PATH": "/usr/bin:/bin", "KAFKA_HOME": str(tmp_path), "CLUSTER_ID": "vmJ5SCIeVLeK54gSIqtkuw",
           "STREAM_RECS_SECURITY_SASL_USERNAME": user, "STREAM_RECS_SECURITY_SASL_PASSWORD": password}
    done = subprocess.run(["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and complaint in done.stderr, done.stderr
    assert not password or password not in done.stderr


def test_dockerfile_passes_hadolint():
    done = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_builds_a_cpu_non_root_worker():
    lines = [line for line in DOCKERFILE.read_text().splitlines() if line and not line.startswith("#")]
    stages = [line.split()[-1] for line in lines if line.startswith("FROM ")]
    assert stages[-1] == "worker" and "baked" in stages  # the default target and the baked one
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any("--torch-backend=cpu" in line for line in lines)
    assert f"EXPOSE {METRICS_PORT}" in lines
    ignored = {
        line for line in DOCKERFILE.with_name("Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    }
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line and "${" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                assert source not in ignored, f"COPY {source}: excluded from the build context"
