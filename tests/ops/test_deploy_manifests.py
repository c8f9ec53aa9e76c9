"""deploy/: the Kubernetes manifests pass the Kubernetes API schemas (kubernetes-validate, strict),
the compose file passes the Compose specification schema (check-jsonschema), the Dockerfile passes
hadolint, and the pieces agree with each other (labels, ports, probes, names, mounted paths): the
trainer runs alone, beside the workers, with their Kafka settings, writing to the models volume they
read at the same path."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from stream_recs.config import specs

from .conftest import DEPLOY

K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
REPO = DEPLOY.parent
METRICS_PORT = 9465
TRAINER_PORT = 9466
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
    assert checked >= 10


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


def pod_of(deployment: dict) -> tuple[dict, dict]:
    """(pod spec, its only container)."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def mounted_claims(pod: dict, container: dict) -> dict[str, dict]:
    """claim name -> {"path": mount path, "read_only": bool}, for the claims ``container`` mounts."""
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    return {
        claims[m["name"]]["claimName"]: {"path": m["mountPath"], "read_only": bool(
            m.get("readOnly") or claims[m["name"]].get("readOnly"))}
        for m in container["volumeMounts"] if m["name"] in claims
    }


def test_trainer_runs_alone_beside_the_workers():
    resources = manifests()
    spec = resources["Deployment/stream-recs-trainer"]["spec"]
    assert spec["replicas"] == 1, "two trainers would publish competing models"
    assert spec["strategy"] == {"type": "Recreate"}, "a rolling update runs two trainers at once"
    labels = spec["template"]["metadata"]["labels"]
    worker_labels = resources["Deployment/stream-recs-worker"]["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert not spec["selector"]["matchLabels"].items() <= worker_labels.items(), "selects the workers"
    meant_for_workers = [name for name in resources if name.endswith(("/stream-recs-worker", "/stream-recs"))]
    assert {"Service/stream-recs", "PodDisruptionBudget/stream-recs-worker"} <= set(meant_for_workers)
    for name in meant_for_workers:  # nothing meant for the workers picks the trainer up
        spec = resources[name].get("spec", {})
        selector = spec.get("selector") or spec.get("podSelector") or {}
        selector = selector.get("matchLabels", selector)
        if selector:
            assert not selector.items() <= labels.items(), f"{name} selects the trainer"


def test_trainer_shares_the_models_claim_and_path_with_the_workers():
    resources = manifests()
    config = resources["ConfigMap/stream-recs-config"]["data"]
    worker_pod, worker = pod_of(resources["Deployment/stream-recs-worker"])
    trainer_pod, trainer = pod_of(resources["Deployment/stream-recs-trainer"])
    (shell,) = trainer["args"]
    assert trainer["command"] == ["sh", "-c"] and shell.startswith("exec stream-recs trainer ")
    args = shell.split()
    worker_claims = mounted_claims(worker_pod, worker)
    trainer_claims = mounted_claims(trainer_pod, trainer)
    shared = worker_claims.keys() & trainer_claims.keys()
    assert shared == {"stream-recs-models"}
    (claim,) = shared
    assert worker_claims[claim]["read_only"] and not trainer_claims[claim]["read_only"], "one writer"
    models = Path(worker_claims[claim]["path"])
    assert trainer_claims[claim]["path"] == str(models), "announced paths must resolve on the workers"
    assert Path(flag(args, "--models-dir")).is_relative_to(models)
    assert Path(flag(args, "--models-dir")).is_relative_to(config["STREAM_RECS_MODELS_ROOT"])
    pvc = resources[f"PersistentVolumeClaim/{claim}"]["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"], "workers and trainer on several nodes mount it"
    assert '${MODEL_DIR:+--model "$MODEL_DIR"}' in shell and "MODEL_DIR" in config  # or the announced one
    (window,) = trainer_claims.keys() - shared  # the rolling window survives a new pod
    assert resources[f"PersistentVolumeClaim/{window}"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert Path(flag(args, "--window-dir")).is_relative_to(trainer_claims[window]["path"])


def test_trainer_has_the_workers_kafka_settings_and_security():
    resources = manifests()
    worker_pod, worker = pod_of(resources["Deployment/stream-recs-worker"])
    trainer_pod, trainer = pod_of(resources["Deployment/stream-recs-trainer"])
    assert trainer["envFrom"] == worker["envFrom"]  # ConfigMap and credentials Secret
    overridden = {env["name"]: env["value"] for env in trainer["env"]}
    known = {spec.variable for spec in specs()}
    assert overridden.keys() <= known, f"not settings: {overridden.keys() - known}"
    assert not [name for name in overridden if "SECURITY" in name or "BOOTSTRAP" in name or "APP_ID" in name]
    tls = {v["name"]: v for v in worker_pod["volumes"]}["kafka-tls"]
    assert tls in trainer_pod["volumes"]
    assert [m for m in worker["volumeMounts"] if m["name"] == "kafka-tls"] == [
        m for m in trainer["volumeMounts"] if m["name"] == "kafka-tls"]
    assert trainer["image"] == worker["image"]
    assert trainer_pod["securityContext"] == worker_pod["securityContext"]
    assert trainer["securityContext"] == worker["securityContext"]
    assert set(m["name"] for m in trainer["volumeMounts"]) == {v["name"] for v in trainer_pod["volumes"]}
    port = int(overridden["STREAM_RECS_TRAINER_PORT"])
    assert port == TRAINER_PORT
    assert trainer["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe"):
        assert trainer[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert trainer["resources"]["limits"]["memory"] and trainer["resources"]["requests"]["cpu"]
    annotations = resources["Deployment/stream-recs-trainer"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


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


def test_trainer_service_and_monitor_select_the_trainer_only():
    resources = manifests()
    pod_labels = resources["Deployment/stream-recs-trainer"]["spec"]["template"]["metadata"]["labels"]
    service = resources["Service/stream-recs-trainer"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["publishNotReadyAddresses"] is True  # a crash-looping trainer: up 0
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", TRAINER_PORT, "metrics")
    monitor = resources["ServiceMonitor/stream-recs-trainer"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert not selector.items() <= resources["Service/stream-recs"]["metadata"]["labels"].items()
    workers = resources["ServiceMonitor/stream-recs"]["spec"]["selector"]["matchLabels"]
    assert not workers.items() <= service["metadata"]["labels"].items(), "the trainer in the workers' job"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert f'up{{job="{service["metadata"]["name"]}"}}' in alerts  # the Operator's job label


@pytest.mark.parametrize("component", ["worker", "trainer"])
def test_network_policy_admits_only_prometheus_to_the_metrics_port(component):
    resources = manifests()
    pod = resources[f"Deployment/stream-recs-{component}"]["spec"]["template"]
    policy = resources[f"NetworkPolicy/stream-recs-{component}"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert "Ingress" in policy["policyTypes"]
    (rule,) = policy["ingress"]
    (peer,) = rule["from"]  # namespace AND pods in one peer: as two peers, either would do
    assert {"namespaceSelector", "podSelector"} <= peer.keys()
    assert peer["podSelector"]["matchLabels"] and peer["namespaceSelector"]["matchLabels"]
    (container,) = pod["spec"]["containers"]
    served = {port["name"]: port["containerPort"] for port in container["ports"]}
    (port,) = rule["ports"]
    assert served.get(port["port"], port["port"]) == served["metrics"] and served.keys() == {"metrics"}
    others = [r for name, r in resources.items()
              if name.startswith("NetworkPolicy/") and r["spec"] is not policy]
    assert all(not o["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
               for o in others), "another policy selects these pods too"


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
    documents = sum(len(list(yaml.safe_load_all((K8S / name).read_text()))) for name in listed)
    assert len(list(yaml.safe_load_all(built.stdout))) == documents


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
    assert set(services) == {"kafka", "topics", "worker", "trainer", "prometheus", "grafana"}
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


VOLUME = re.compile(  # [source:]target[:mode], where a source may be ${VAR:-default}
    r"^(?:(?P<source>\$\{[^}]*\}|[^:/][^:]*|/[^:]*(?=:)):)?(?P<target>/[^:]*)(?::(?P<mode>\w+))?$"
)


def volumes(service: dict) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of a service's short-syntax volumes (source "": anonymous)."""
    out = {}
    for volume in service["volumes"]:
        found = VOLUME.match(volume)
        assert found, volume
        out[found["target"]] = (found["source"] or "", found["mode"] or "rw")
    return out


def test_compose_trainer_writes_where_the_workers_read():
    services = compose()["services"]
    worker, trainer = services["worker"], services["trainer"]
    env = trainer["environment"]
    shell = trainer["command"][-1]
    assert trainer["command"][:2] == ["sh", "-c"] and shell.startswith("exec stream-recs trainer ")
    args = shell.split()
    assert '$${MODEL_DIR:+--model "$$MODEL_DIR"}' in shell and env["MODEL_DIR"] == "${MODEL_DIR:-}"
    shared = {target for target, (source, _) in volumes(worker).items() if source.startswith("${MODELS")}
    (models,) = shared
    assert volumes(trainer)[models] == (volumes(worker)[models][0], "rw")  # same folder, same path
    assert volumes(worker)[models][1] == "ro", "one writer: the trainer"
    models_dir = Path(flag(args, "--models-dir"))
    assert models_dir.is_relative_to(models) and models_dir.is_relative_to(env["STREAM_RECS_MODELS_ROOT"])
    window = Path(flag(args, "--window-dir"))
    (data,) = [target for target, (source, _) in volumes(trainer).items() if window.is_relative_to(target)]
    assert volumes(trainer)[data][0] in compose()["volumes"], "the window must outlive the container"
    assert trainer["profiles"] == ["trainer"]  # learning is opted into
    assert "replicas" not in trainer.get("deploy", {}), "one trainer"
    assert trainer["depends_on"] == worker["depends_on"]
    assert (trainer["build"], trainer["image"]) == (worker["build"], worker["image"])


def test_compose_trainer_has_the_workers_kafka_settings_and_is_scraped():
    services = compose()["services"]
    worker_env, env = services["worker"]["environment"], services["trainer"]["environment"]
    known = {spec.variable for spec in specs()}
    assert {name for name in env if name.startswith("STREAM_RECS_")} <= known
    for name, value in worker_env.items():
        if name.startswith("STREAM_RECS_") and name != "STREAM_RECS_TORCH_THREADS":
            assert env[name] == value, f"{name}: the trainer's differs from the workers'"
    port = int(env["STREAM_RECS_TRAINER_PORT"])
    assert port == TRAINER_PORT and port != int(env["STREAM_RECS_METRICS_PORT"])
    assert "HEALTHCHECK" in DOCKERFILE.read_text() and "/readyz" in DOCKERFILE.read_text()  # the workers'
    assert f"127.0.0.1:{port}/metrics" in " ".join(services["trainer"]["healthcheck"]["test"])
    jobs = {job["job_name"]: job for job in
            yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]}
    (discovery,) = jobs["stream-recs-trainer"]["dns_sd_configs"]
    assert discovery["names"] == ["trainer"] and discovery["port"] == port
    assert 'up{job="stream-recs-trainer"}' in (DEPLOY / "prometheus" / "alerts.yml").read_text()


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
