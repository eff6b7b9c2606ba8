"""The deployment files agree with the contract: commands, probes, image, user and settings."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

# CONTRACT §3, verbatim.
CONTRACT_SETTINGS = frozenset(
    {
        "SYNCHOOK_DATABASE_URL",
        "SYNCHOOK_REDIS_URL",
        "SYNCHOOK_SECRET_KEY",
        "SYNCHOOK_HOST",
        "SYNCHOOK_PORT",
        "SYNCHOOK_ROOT_PATH",
        "SYNCHOOK_GOOGLE_API_URL",
        "SYNCHOOK_GOOGLE_TOKEN_URL",
        "SYNCHOOK_MICROSOFT_GRAPH_URL",
        "SYNCHOOK_MICROSOFT_TOKEN_URL",
        "SYNCHOOK_GOOGLE_CLIENT_ID",
        "SYNCHOOK_GOOGLE_CLIENT_SECRET",
        "SYNCHOOK_MICROSOFT_CLIENT_ID",
        "SYNCHOOK_MICROSOFT_CLIENT_SECRET",
        "SYNCHOOK_ALLOW_PRIVATE_TARGETS",
        "SYNCHOOK_RETRY_SCHEDULE",
        "SYNCHOOK_DELIVERY_TIMEOUT",
        "SYNCHOOK_BACKGROUND_SYNC_INTERVAL",
        "SYNCHOOK_DISABLE_AFTER",
        "SYNCHOOK_RETENTION_DAYS",
        "SYNCHOOK_LOG_FORMAT",
        "SYNCHOOK_PUBLIC_URL",
        "SYNCHOOK_PUSH_DEBOUNCE",
        "SYNCHOOK_PUSH_FALLBACK_INTERVAL",
        "SYNCHOOK_REPLAY_MAX",
        "SYNCHOOK_METRICS_TOKEN",
    }
)
SECRET_SETTINGS = frozenset({"SYNCHOOK_DATABASE_URL", "SYNCHOOK_REDIS_URL", "SYNCHOOK_SECRET_KEY"})

SETTING_NAME = re.compile(r"\bSYNCHOOK_[A-Z0-9_]+\b")


# ---- loading ------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def k8s_objects() -> list[dict[str, Any]]:
    objects = [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_all(path)]
    return [doc for doc in objects if doc.get("kind") != "Kustomization"]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_all(COMPOSE)[0]["services"]
    return services


def command_of(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


# ---- every file ---------------------------------------------------------------------


def test_deploy_holds_the_expected_yaml_files() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in yaml_files()}
    assert {
        "compose.yaml",
        "k8s/configmap.yaml",
        "k8s/secret.yaml",
        "k8s/migrate-job.yaml",
        "k8s/api-deployment.yaml",
        "k8s/api-service.yaml",
        "k8s/worker-deployment.yaml",
        "k8s/worker-hpa.yaml",
        "k8s/pdb.yaml",
        "k8s/kustomization.yaml",
    } <= names


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_document_parses_to_a_mapping(path: Path) -> None:
    docs = load_all(path)
    assert docs
    assert all(isinstance(doc, dict) for doc in docs)


def test_every_k8s_object_has_kind_name_and_no_namespace() -> None:
    for obj in k8s_objects():
        assert obj.get("apiVersion") and obj.get("kind"), obj
        assert obj["metadata"].get("name"), obj
        # Namespace-less on purpose: `kubectl -n` or the kustomization chooses it.
        assert "namespace" not in obj["metadata"], obj["metadata"]["name"]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_all(K8S / "kustomization.yaml")[0]
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


# ---- settings -------------------------------------------------------------------------


def setting_names_in(path: Path) -> set[str]:
    return set(SETTING_NAME.findall(path.read_text()))


def settings_files() -> list[Path]:
    """What deploys read: these name contract settings only. `.env.example` documents every setting the code
    reads, beyond the contract's table too; tests/kernel/test_env_example.py holds it to the settings model."""
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in {".yaml", ".yml", ".md", ""}]
    return sorted({*files, DOCKERFILE})


@pytest.mark.parametrize("path", settings_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_setting_named_is_in_the_contract(path: Path) -> None:
    unknown = setting_names_in(path) - CONTRACT_SETTINGS
    assert not unknown, f"{path.relative_to(ROOT)} names settings the contract does not have: {sorted(unknown)}"


def test_every_setting_named_is_a_settings_field() -> None:
    settings = pytest.importorskip("synchook.settings")
    fields = set(settings.Settings.model_fields)
    used = set().union(*(setting_names_in(p) for p in settings_files()))
    missing = {name for name in used if name.removeprefix("SYNCHOOK_").lower() not in fields}
    assert not missing, f"not fields of synchook.settings.Settings: {sorted(missing)}"


def test_env_example_documents_every_contract_setting_the_code_has() -> None:
    settings = pytest.importorskip("synchook.settings")
    implemented = {
        name for name in CONTRACT_SETTINGS if name.removeprefix("SYNCHOOK_").lower() in settings.Settings.model_fields
    }
    assert implemented - setting_names_in(ENV_EXAMPLE) == set()


def test_env_example_defaults_match_the_contract() -> None:
    assigned = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^(SYNCHOOK_[A-Z0-9_]+)=(.*)$", line)
        if match:
            assigned[match[1]] = match[2]
    assert assigned["SYNCHOOK_DATABASE_URL"] == "sqlite+aiosqlite:///./.synchook/synchook.db"
    assert assigned["SYNCHOOK_RETRY_SCHEDULE"] == "0,5,300,1800,7200,18000,36000,36000"
    assert assigned["SYNCHOOK_DISABLE_AFTER"] == "432000"
    assert assigned["SYNCHOOK_PORT"] == "8000"
    # Settings with no default stay commented out, so that copying the file sets nothing secret.
    no_default = {
        "SYNCHOOK_REDIS_URL",
        "SYNCHOOK_SECRET_KEY",
        "SYNCHOOK_GOOGLE_CLIENT_SECRET",
        "SYNCHOOK_MICROSOFT_CLIENT_SECRET",
    }
    assert not no_default & assigned.keys()


def test_configmap_holds_no_secret_and_secret_holds_the_credentials() -> None:
    config = k8s_object("ConfigMap", "synchook-config")["data"]
    secret = k8s_object("Secret", "synchook-secrets")["stringData"]
    assert not SECRET_SETTINGS & config.keys()
    assert not {k for k in config if "SECRET" in k}
    assert set(secret) == SECRET_SETTINGS
    assert secret["SYNCHOOK_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert secret["SYNCHOOK_REDIS_URL"].startswith("redis://")
    # In a container the API must listen beyond loopback.
    assert config["SYNCHOOK_HOST"] == "0.0.0.0"
    # ConfigMap values must be strings, or the API server rejects the object.
    assert all(isinstance(v, str) for v in config.values())


# ---- commands ---------------------------------------------------------------------------


def test_k8s_workloads_run_the_contract_commands() -> None:
    assert only_container(k8s_object("Job", "synchook-migrate"))["command"] == ["synchook", "migrate"]
    assert only_container(k8s_object("Deployment", "synchook-api"))["command"] == ["synchook", "api"]
    assert only_container(k8s_object("Deployment", "synchook-worker"))["command"] == ["synchook", "worker"]


def test_compose_services_run_the_contract_commands() -> None:
    services = compose_services()
    assert command_of(services["migrate"]["command"]) == ["synchook", "migrate"]
    assert command_of(services["api"]["command"]) == ["synchook", "api"]
    assert command_of(services["worker"]["command"]) == ["synchook", "worker"]


def test_k8s_workloads_read_config_and_secret() -> None:
    for kind, name in [("Job", "synchook-migrate"), ("Deployment", "synchook-api"), ("Deployment", "synchook-worker")]:
        sources = only_container(k8s_object(kind, name))["envFrom"]
        refs = {(next(iter(s)), next(iter(s.values()))["name"]) for s in sources}
        assert refs == {("configMapRef", "synchook-config"), ("secretRef", "synchook-secrets")}, name


def test_compose_waits_for_the_migration_and_its_stores() -> None:
    services = compose_services()
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_compose_configures_production_settings() -> None:
    services = compose_services()
    for name in ("migrate", "api", "worker"):
        env = services[name]["environment"]
        assert env["SYNCHOOK_DATABASE_URL"].startswith("postgresql+asyncpg://"), name
        assert "@postgres:5432/" in env["SYNCHOOK_DATABASE_URL"], name
        assert env["SYNCHOOK_REDIS_URL"].startswith("redis://redis:6379"), name
        # The key comes from the operator's environment or env file, never from this file.
        assert env["SYNCHOOK_SECRET_KEY"].startswith("${SYNCHOOK_SECRET_KEY"), name
    assert services["api"]["environment"]["SYNCHOOK_HOST"] == "0.0.0.0"
    assert services["api"]["ports"] == ["8000:8000"]
    assert services["worker"]["deploy"]["replicas"] == 3


# ---- images ------------------------------------------------------------------------------


def synchook_images() -> dict[str, str]:
    images = {}
    for obj in k8s_objects():
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            images[f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"] = container["image"]
    for name, service in compose_services().items():
        if name not in ("postgres", "redis"):
            images[f"compose/{name}"] = service["image"]
    return images


def test_one_synchook_image_everywhere() -> None:
    images = synchook_images()
    assert len(images) >= 6  # three k8s workloads, three compose services
    assert len(set(images.values())) == 1, images
    kustomization = load_all(K8S / "kustomization.yaml")[0]
    (override,) = kustomization["images"]
    image = next(iter(images.values()))
    assert image.partition(":")[0] == override["name"]
    assert image == f"{override['newName']}:{override['newTag']}"


def test_compose_builds_the_image_from_the_dockerfile() -> None:
    for name in ("migrate", "api", "worker"):
        build = compose_services()[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


# ---- API probes and service ----------------------------------------------------------------


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(match)


def test_api_probes_hit_readyz_and_healthz_on_the_container_port() -> None:
    api = k8s_object("Deployment", "synchook-api")
    container = only_container(api)
    config = k8s_object("ConfigMap", "synchook-config")["data"]
    port = int(config["SYNCHOOK_PORT"])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    prefix = config.get("SYNCHOOK_ROOT_PATH", "").rstrip("/")
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        http = container[probe]["httpGet"]
        assert http["path"] == prefix + path, probe
        assert container_port(container, http["port"]) == port, probe


def test_api_service_targets_the_container_port() -> None:
    service = k8s_object("Service", "synchook-api")
    api = k8s_object("Deployment", "synchook-api")
    container = only_container(api)
    (port,) = service["spec"]["ports"]
    assert container_port(container, port["targetPort"]) == container["ports"][0]["containerPort"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_workers_have_no_http_probes() -> None:
    # A worker serves no HTTP: an httpGet probe would restart it forever.
    worker = only_container(k8s_object("Deployment", "synchook-worker"))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert "httpGet" not in worker.get(probe, {}), probe
    services = compose_services()
    assert services["worker"]["healthcheck"] == {"disable": True}
    assert services["migrate"]["healthcheck"] == {"disable": True}


# ---- workloads ------------------------------------------------------------------------------


def test_replicas_autoscaling_and_disruption_budgets() -> None:
    api = k8s_object("Deployment", "synchook-api")
    worker = k8s_object("Deployment", "synchook-worker")
    assert api["spec"]["replicas"] == 2
    assert worker["spec"]["replicas"] == 3

    hpa = k8s_object("HorizontalPodAutoscaler", "synchook-worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "synchook-worker"}
    assert hpa["spec"]["minReplicas"] == worker["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"

    for deployment in (api, worker):
        name = deployment["metadata"]["name"]
        pdb = k8s_object("PodDisruptionBudget", name)
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert selector == deployment["spec"]["selector"]["matchLabels"], name
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items(), name


def pod_workloads() -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] in {"Deployment", "Job"}]


def test_pods_run_as_non_root_with_resources() -> None:
    workloads = pod_workloads()
    assert len(workloads) == 3
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        container = only_container(workload)
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["resources"]["requests"]["cpu"], name
        assert container["resources"]["requests"]["memory"], name
        assert container["resources"]["limits"]["memory"], name


def test_deployments_have_a_termination_grace_period() -> None:
    for name in ("synchook-api", "synchook-worker"):
        pod = k8s_object("Deployment", name)["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 30, name


def test_migration_job_does_not_restart_forever() -> None:
    job = k8s_object("Job", "synchook-migrate")
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}
    assert 0 < job["spec"]["backoffLimit"] <= 10


# ---- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    instructions = dockerfile_instructions()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    assert any("AS builder" in f for f in froms)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in [f"{k} {a}" for k, a in instructions]
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    assert any(c.startswith("--from=builder") for c in copies)


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER instruction"
    user = users[-1].partition(":")[0]
    # Numeric, so that Kubernetes' runAsNonRoot can verify it; and the one the pods use.
    assert user.isdigit() and int(user) != 0
    for workload in pod_workloads():
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user)


def test_dockerfile_healthcheck_fetches_healthz_and_cmd_is_api() -> None:
    instructions = dockerfile_instructions()
    (healthcheck,) = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    assert "CMD" in healthcheck
    assert "urllib.request" in healthcheck
    assert "/healthz" in healthcheck
    cmds = [args for keyword, args in instructions if keyword == "CMD"]
    assert cmds[-1] == '["synchook", "api"]'
    exposed = [args for keyword, args in instructions if keyword == "EXPOSE"]
    assert exposed == [k8s_object("ConfigMap", "synchook-config")["data"]["SYNCHOOK_PORT"]]


def test_dockerfile_copies_every_package_the_distribution_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = [args.split() for keyword, args in dockerfile_instructions() if keyword == "COPY"]
    sources = {source.rstrip("/") for args in copied if not args[0].startswith("--") for source in args[:-1]}
    assert packages <= sources
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= sources
