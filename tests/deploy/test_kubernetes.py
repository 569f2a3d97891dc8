"""deploy/kubernetes: every overlay renders (`kubectl kustomize`), every object is valid against
the Kubernetes schemas (offline, `kubernetes-validate`), and the manifests keep the promises of
docs/kubernetes.md. Also what two server replicas need: migrations that take turns.

No cluster runs here: these tests check the manifests, not a running install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from functools import cache
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, inspect

from service.cli import build_parser
from tests.conftest import (
    ROOT,
    Processes,
    hpo_command,
    in_threads,
    postgres_database,
    spec_doc,
    wait_for,
)

KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(path.parent.name for path in KUSTOMIZE.glob("overlays/*/kustomization.yaml"))
# The oldest Kubernetes release still maintained when this was written, and the newest schema
# kubernetes-validate ships.
VERSIONS = ("1.31.0", "latest")
NAMESPACE = "hpo"
# A URL with a password in it (scheme://user:password@host).
URL_WITH_PASSWORD = re.compile(r"[a-z+]+://[^/\s:@]+:[^/\s@]+@")
# The most a worker needs to finish an epoch and hand its trial back, at the least.
MIN_WORKER_GRACE_SECONDS = 300


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of one overlay, as objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("HPO_REQUIRE_KUBECTL"):
            pytest.fail("HPO_REQUIRE_KUBECTL is set but kubectl is not installed")
        pytest.skip("kubectl is not installed (it renders the Kustomize overlays)")
    out = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def one(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    found = [c for c in pod["initContainers" if init else "containers"] if c["name"] == name]
    assert len(found) == 1
    return found[0]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in c.get("env", [])}


def secret_ref(c: dict[str, Any], name: str) -> tuple[str, str]:
    item = env_of(c)[name]
    assert "value" not in item, f"{c['name']}: {name} is written in the manifest"
    ref = item["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def hpo_args(c: dict[str, Any]) -> Any:
    """The container's `hpo ...` command, parsed by the real command line (a flag the CLI does
    not know fails here, not in a cluster)."""
    command = [*c.get("command", []), *c.get("args", [])]
    assert command[0] == "hpo", command
    return build_parser().parse_args(command[1:])


def test_there_are_the_overlays_the_docs_name() -> None:
    assert OVERLAYS == ["autoscaled", "external-postgres", "gpu-pool"]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_of_every_overlay_is_valid_against_the_kubernetes_schemas(
    overlay: str, version: str
) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    target = latest_version() if version == "latest" else version
    checked = 0
    for obj in rendered(overlay):
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a custom resource: its fields are checked in the KEDA test below
        kubernetes_validate.validate(obj, target, strict=True)  # raises on any error
        checked += 1
    assert checked >= 6


def test_the_validator_refuses_a_broken_object() -> None:
    """The validation above can fail: an unknown field and a wrong type are refused."""
    import kubernetes_validate

    deployment = one(rendered("gpu-pool"), "Deployment", "hpo-server")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
    typo = yaml.safe_load(yaml.safe_dump(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_server_runs_replicated_probed_and_sized_with_a_migration_that_waits(
    overlay: str,
) -> None:
    objects = rendered(overlay)
    server = one(objects, "Deployment", "hpo-server")
    pod = server["spec"]["template"]["spec"]
    labels = server["spec"]["template"]["metadata"]["labels"]
    assert server["spec"]["replicas"] >= 2
    assert server["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    main = container(server, "server")
    args = hpo_args(main)
    assert (args.command, args.host) == ("server", "0.0.0.0")
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"http": args.port}
    for probe in ("readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    assert set(main["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in main["resources"]["limits"]

    migrate = container(server, "migrate", init=True)
    migrate_args = hpo_args(migrate)
    assert (migrate_args.command, migrate_args.db_command) == ("db", "upgrade")
    assert migrate_args.wait_seconds >= 60  # waits for the database, bounded
    assert migrate["image"] == main["image"]  # the same schema version as the server
    assert secret_ref(migrate, "HPO_DATABASE_URL") == secret_ref(main, "HPO_DATABASE_URL")

    service = one(objects, "Service", "hpo-server")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["ports"][0]["port"] == args.port

    budget = one(objects, "PodDisruptionBudget", "hpo-server")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= budget["spec"]["minAvailable"] < server["spec"]["replicas"]

    # Checkpoints are shared by every replica, on any node.
    [claim] = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert one(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_take_one_gpu_each_and_have_time_to_hand_their_trial_back(overlay: str) -> None:
    objects = rendered(overlay)
    worker = one(objects, "Deployment", "hpo-worker")
    main = container(worker, "worker")
    args = hpo_args(main)
    assert (args.command, args.devices) == ("worker", "auto")
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert set(main["resources"]["requests"]) == {"cpu", "memory"}
    pod = worker["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= MIN_WORKER_GRACE_SECONDS
    # It reaches the server through the Service, and needs only the worker token.
    service = one(objects, "Service", "hpo-server")
    assert args.server == f"http://hpo-server:{service['spec']['ports'][0]['port']}"
    assert secret_ref(main, "HPO_WORKER_TOKEN") == ("hpo-tokens", "worker-token")
    server = container(one(objects, "Deployment", "hpo-server"), "server")
    assert secret_ref(server, "HPO_WORKER_TOKEN") == ("hpo-tokens", "worker-token")
    assert secret_ref(server, "HPO_API_TOKEN") == ("hpo-tokens", "api-token")
    assert "HPO_DATABASE_URL" not in env_of(main)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_only_from_secrets(overlay: str) -> None:
    objects = rendered(overlay)
    assert not [o for o in objects if o["kind"] == "Secret"]  # created by hand, never shipped
    text = yaml.safe_dump_all(objects)
    assert not URL_WITH_PASSWORD.search(text)
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            for name, item in env_of(c).items():
                if re.search("TOKEN|PASSWORD|DATABASE_URL", name):
                    assert "secretKeyRef" in item.get("valueFrom", {}), f"{c['name']}: {name}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_one_namespace_and_no_container_runs_as_root(overlay: str) -> None:
    for obj in rendered(overlay):
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
            continue
        assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod:
            assert pod["securityContext"]["runAsNonRoot"] is True
            for c in pod["containers"] + pod.get("initContainers", []):
                assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_gpu_pool_puts_workers_on_the_gpu_nodes_and_runs_postgres_in_the_cluster() -> None:
    objects = rendered("gpu-pool")
    pod = one(objects, "Deployment", "hpo-worker")["spec"]["template"]["spec"]
    assert pod["nodeSelector"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    database = one(objects, "StatefulSet", "hpo-postgres")
    postgres = database["spec"]["template"]["spec"]["containers"][0]
    assert secret_ref(postgres, "POSTGRES_PASSWORD") == ("hpo-postgres", "password")
    assert one(objects, "Service", "hpo-postgres")["spec"]["ports"][0]["port"] == 5432
    server_pod = one(objects, "Deployment", "hpo-server")["spec"]["template"]["spec"]
    assert "nodeSelector" not in server_pod  # the server needs no GPU node


def test_external_postgres_ships_no_database_and_waits_longer_for_its_own() -> None:
    objects = rendered("external-postgres")
    assert not [o for o in objects if o["kind"] == "StatefulSet"]
    assert not [o for o in objects if "postgres" in o["metadata"]["name"]]
    server = container(one(objects, "Deployment", "hpo-server"), "server")
    assert float(env_of(server)["HPO_DATABASE_WAIT_SECONDS"]["value"]) >= 300
    assert secret_ref(server, "HPO_DATABASE_URL") == ("hpo-database", "url")


def test_autoscaled_scales_workers_from_zero_on_the_trials_waiting() -> None:
    objects = rendered("autoscaled")
    scaled = one(objects, "ScaledObject", "hpo-worker")
    worker = one(objects, "Deployment", "hpo-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", worker["metadata"]["name"])
    assert scaled["spec"]["minReplicaCount"] == 0 < scaled["spec"]["maxReplicaCount"]
    assert worker["spec"]["replicas"] == 0  # KEDA owns the count
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = " ".join(trigger["metadata"]["query"].split())
    assert QUEUED_GAUGE in query
    assert 'hpo_studies{state="running"}' in query  # from 0 workers, before any trial exists
    assert query.startswith("max(")  # every replica reports the same database counts
    assert float(trigger["metadata"]["threshold"]) == 1  # one worker per trial
    # Workers removed by a scale-down hand their trial back within their grace period.
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= MIN_WORKER_GRACE_SECONDS


# The gauge of /metrics that counts trials waiting for a worker (service/api/metrics.py).
QUEUED_GAUGE = 'hpo_trials{state=~"queued|running"}'


@pytest.mark.e2e
def test_migrations_started_together_take_turns_and_all_succeed() -> None:
    """Server replicas and the migration init container start at the same moment on a fresh
    database. Without the advisory lock, 2 or 3 of 4 die with `duplicate key value violates
    unique constraint "pg_type_typname_nsp_index"` (seen here, while writing this)."""
    with postgres_database() as url:
        procs = [
            subprocess.Popen(
                hpo_command("db", "upgrade", "--database-url", url),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
            for _ in range(4)
        ]
        outputs = [proc.communicate(timeout=120)[0].decode() for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0, 0, 0], outputs
        assert all("is up to date" in out for out in outputs)
        engine = create_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert {"hpo_alembic_version", "alembic_version", "studies", "trials"} <= tables
        assert any(name.startswith("hpo_") and name != "hpo_alembic_version" for name in tables)


@pytest.mark.e2e
def test_two_server_replicas_take_each_expired_lease_back_once(processes: Processes) -> None:
    """Both replicas reap expired leases on one PostgreSQL database: their reaper threads
    (every third of the lease) and every lease request, here 8 threads of them spread over
    both replicas while the leases (3 s) expire. A worker that leased 16 trials vanishes: each lease
    is taken back exactly once, so every trial is queued again at attempt 2 (taken back twice
    it would read attempt 3, or `failed` at the third). The bystanders ask for work they cannot
    do (the study's plugin model), so their requests reap but never lease."""
    with postgres_database() as database:
        env = {"HPO_DATABASE_URL": database, "HPO_LEASE_SECONDS": "3"}
        replicas = [processes.server(f"server{i}", **env) for i in range(2)]
        budget = {"max_trials": 16, "parallel_trials": 16, "epochs": 3}
        workload = {"model": "vit", "dataset": "synthetic"}
        clients = [httpx.Client(base_url=url, timeout=30) for url in replicas]
        try:
            http = clients[0]
            vanishing = _register(http, "vanishing", models=["vit"])  # announces the model
            spec = spec_doc("replicas", budget=budget, workload=workload)
            assert http.post("/api/v1/studies", json=spec).status_code == 201
            leased = http.post(f"/api/v1/workers/{vanishing}/lease", json={"count": 16})
            assert len(leased.json()["assignments"]) == 16
            bystanders = [_register(clients[i % 2], f"bystander{i}") for i in range(8)]
            errors = in_threads(8, lambda i: _ask_for_work(clients[i % 2], bystanders[i], 6.0))
            assert not errors, errors

            def all_queued() -> list[dict[str, Any]] | None:
                items = http.get("/api/v1/studies/1/trials?limit=100").json()["items"]
                return items if all(t["state"] == "queued" for t in items) else None

            trials = wait_for(all_queued, 30, "every lease to be taken back")
            time.sleep(2)  # both reapers go round several more times: nothing changes
            assert http.get("/api/v1/studies/1/trials?limit=100").json()["items"] == trials
        finally:
            for client in clients:
                client.close()
        assert [t["attempt"] for t in trials] == [2] * 16
        processes.stop_all()
    assert "Traceback" not in processes.log("server0") + processes.log("server1")


def _register(http: httpx.Client, name: str, **capabilities: list[str]) -> int:
    reply = http.post("/api/v1/workers/register", json={"name": name, "capabilities": capabilities})
    assert reply.status_code == 201, reply.text
    worker_id: int = reply.json()["worker_id"]
    return worker_id


def _ask_for_work(http: httpx.Client, worker: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reply = http.post(f"/api/v1/workers/{worker}/lease", json={"count": 1})
        assert reply.status_code == 200, reply.text
        assert reply.json()["assignments"] == []
