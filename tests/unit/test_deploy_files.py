"""The deploy files (compose, systemd, Kubernetes) are checked against the code they run.

No container runs here: the files are parsed and compared with the CLI, the settings, the
queues and the cost table. ``docker compose config`` runs where docker has compose.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from kombu.transport.redis import Channel

from bench.costs import profile_costs
from tasks.queues import PRIORITY_STEPS
from tasks.registry import ROLES, STAGES
from tasks.settings import Settings
from tests.unit.test_documented_commands import COMMANDS, check_farm

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
YAML_FILES = sorted([DEPLOY / "compose.yml", *KUBE.rglob("*.yaml")])
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
KUSTOMIZATIONS = sorted(KUBE.rglob("kustomization.yaml"))
# Variables with the FARM_ prefix that the deploy files read themselves, not `farm`: compose
# substitutes FARM_GPUS and FARM_S3_BUCKET, systemd expands FARM_WORKER_ARGS.
DEPLOY_VARIABLES = {"FARM_GPUS", "FARM_S3_BUCKET", "FARM_WORKER_ARGS"}
FARM_VARIABLE = re.compile(r"\bFARM_[A-Z0-9_]*[A-Z0-9]\b")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yml").read_text())


def manifests(folder: Path = KUBE) -> list[dict]:
    """Every Kubernetes object under ``folder``, kustomizations left out."""
    found = []
    for path in sorted(folder.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def objects(kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in manifests() if o["kind"] == kind}


def pod_specs() -> dict[str, dict]:
    """Workload name → its pod spec (Deployments and Jobs)."""
    workloads = {**objects("Deployment"), **objects("Job")}
    return {name: o["spec"]["template"]["spec"] for name, o in workloads.items()}


def farm_image_services() -> dict[str, dict]:
    """The compose services built from deploy/Dockerfile, whose entrypoint is ``farm``."""
    return {name: s for name, s in compose()["services"].items() if "build" in s}


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as section → key → values (a key may repeat, as EnvironmentFile)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            current = sections.setdefault(header.group(1), {})
            continue
        assert current is not None and "=" in line, f"{path.name}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(text: str | int) -> float:
    """``960``, ``16m``, ``1h`` (compose durations) in seconds."""
    found = re.fullmatch(r"(\d+)(s|m|h)?", str(text))
    assert found, f"not a duration: {text!r}"
    return int(found.group(1)) * {"s": 1, None: 1, "m": 60, "h": 3600}[found.group(2)]


def container_farm_commands() -> list[tuple[str, list[str]]]:
    """(where, farm argv) for every container of the manifests: args under the image's
    ``farm`` entrypoint, and each ``farm ...`` of a ``sh -c`` script."""
    found = []
    for name, spec in pod_specs().items():
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            command = container.get("command")
            if command is None:
                found.append((where, [str(a) for a in container["args"]]))
                continue
            assert command[:2] == ["sh", "-c"], f"{where}: command {command}"
            for line in re.findall(r"\bfarm ([^;&|]+)", command[2]):
                found.append((where, shlex.split(line)))
    return found


def run_commands() -> list[tuple[str, list[str]]]:
    """(where, farm argv) for everything compose, the systemd units and the manifests run."""
    found = []
    env = dict(re.findall(r"^(\w+)=(.*)$", (DEPLOY / "farm.env.example").read_text(), re.M))
    for name, service in farm_image_services().items():
        if "command" in service:
            argv = [
                re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: env.get(m[1], m[2] or "x"), a)
                for a in service["command"]
            ]
            found.append((f"compose {name}", argv))
    for path in UNITS:
        worker_args = dict(re.findall(r"For the (\w+) role, .*FARM_WORKER_ARGS holds \"([^\"]*)\"",
                                      path.read_text()))  # fmt: skip
        for start in unit(path)["Service"]["ExecStart"]:
            argv = shlex.split(start)
            assert argv[0] == "/opt/fashion-farm/.venv/bin/farm", f"{path.name}: {argv[0]}"
            roles = ["all", "text", "gpu"] if "%i" in start else [""]
            for role in roles:
                args = " ".join(argv[1:]).replace("%i", role)
                args = args.replace("$FARM_WORKER_ARGS", worker_args.get(role, ""))
                found.append((f"{path.name} {role}".strip(), shlex.split(args)))
    return found + [(f"kubernetes {w}", argv) for w, argv in container_farm_commands()]


RUN = run_commands()


# ---------------------------------------------------------------------------- every file


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_every_yaml_file_parses_into_mappings(path):
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents and all(isinstance(doc, dict) for doc in documents if doc is not None)


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_rel)
def test_a_kustomization_lists_only_files_that_exist_and_every_manifest_beside_it(path):
    kustomization = yaml.safe_load(path.read_text())
    listed = kustomization["resources"]
    for resource in listed:
        assert (path.parent / resource).is_file(), f"{_rel(path)}: {resource} does not exist"
    # A manifest nobody lists is never applied; the example secret is left out on purpose.
    beside = {p.name for p in path.parent.glob("*.yaml")} - {"kustomization.yaml"}
    assert beside - set(listed) <= {"secret.example.yaml"}, f"{_rel(path)}: not listed"
    # Every image a listed manifest names is one the kustomization sets.
    named = {i["name"] for i in kustomization.get("images", [])}
    for resource in listed:
        for doc in yaml.safe_load_all((path.parent / resource).read_text()):
            spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("initContainers", []) + spec.get("containers", []):
                assert container["image"] in named, f"{resource}: image {container['image']}"
    assert kustomization["namespace"] == "fashion-farm"


@pytest.mark.parametrize("argv", [a for _, a in RUN], ids=[w for w, _ in RUN])
def test_every_farm_command_the_deploy_files_run_parses(argv):
    check_farm(argv)


def test_the_gpu_boxes_run_every_stage_on_their_cards():
    """compose, systemd and Kubernetes run `farm worker all --gpus ...` on the GPU boxes."""
    commands = dict(RUN)
    assert commands["compose gpu-worker"][:3] == ["worker", "all", "--gpus"]
    assert commands["farm-worker@.service all"] == ["worker", "all", "--gpus", "0,1,2,3"]
    assert commands["kubernetes farm-gpu-worker/worker"] == ["worker", "all", "--gpus", "0"]
    assert set(ROLES["all"]) == set(STAGES), "the all role no longer serves every stage"


def _deploy_texts() -> dict[str, str]:
    paths = [*YAML_FILES, *UNITS, DEPLOY / "farm.env.example", DEPLOY / "Dockerfile"]
    return {_rel(p): p.read_text() for p in [*paths, DEPLOY / "README.md"]}


def test_every_farm_variable_the_deploy_files_name_is_a_setting():
    settings = {f"FARM_{name.upper()}" for name in Settings.model_fields}
    for where, text in _deploy_texts().items():
        for name in set(FARM_VARIABLE.findall(text)):
            assert name in settings | DEPLOY_VARIABLES, f"{where}: {name} is no setting"


def test_the_deploy_variables_are_read_by_the_deploy_files():
    """The names let through above are ones compose or systemd actually expand."""
    texts = "\n".join(_deploy_texts().values())
    for name in DEPLOY_VARIABLES:
        assert re.search(rf"\$\{{?{name}\b", texts), f"{name} is expanded nowhere"
    assert not DEPLOY_VARIABLES & {f"FARM_{n.upper()}" for n in Settings.model_fields}


def test_every_documented_compose_command_names_the_env_file():
    """Without it compose substitutes empty passwords (or stops at the `:?` guard)."""
    lines = [(where, line) for where, line in COMMANDS if line.startswith("docker compose")]
    assert lines
    for where, line in lines:
        assert "--env-file deploy/farm.env" in line, f"{where}: {line}"


# ---------------------------------------------------------------------------- compose


def test_compose_runs_the_migration_before_every_farm_service():
    services = farm_image_services()
    migrate = services.pop("migrate")
    assert migrate["command"] == ["db", "upgrade"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in services.items():
        waits = service["depends_on"]
        assert waits["migrate"]["condition"] == "service_completed_successfully", name
        assert waits["redis"]["condition"] == waits["postgres"]["condition"] == "service_healthy"


def test_compose_waits_only_on_health_checks_that_exist():
    services = compose()["services"]
    assert "healthcheck" in services["redis"] and "healthcheck" in services["postgres"]
    for name, service in services.items():
        for other, how in service.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits on {other}'s health"
    for name in ("flower", "studio", "minio"):
        assert "healthcheck" in services[name], name


def test_compose_redis_keeps_its_messages_and_asks_for_a_password():
    command = compose()["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--requirepass"].startswith("${REDIS_PASSWORD:?")
    # The farm's URLs carry the passwords only when the env file was given.
    urls = compose()["x-farm"]["environment"]
    assert "${POSTGRES_PASSWORD:?" in urls["FARM_DATABASE_URL"]
    assert "${REDIS_PASSWORD:?" in urls["FARM_BROKER_URL"]


def test_compose_workers_drain_and_the_optional_parts_are_profiles():
    services = compose()["services"]
    limit = Settings.model_fields["task_time_limit"].default
    for name in ("gpu-worker", "text-worker"):
        assert services[name]["stop_signal"] == "SIGTERM"
        assert seconds(services[name]["stop_grace_period"]) > limit, name
    assert "profiles" not in services["gpu-worker"]
    assert services["text-worker"]["profiles"] == ["cpu-text"]
    assert services["text-worker"]["command"] == ["--device", "cpu", "worker", "text"]
    assert services["minio"]["profiles"] == services["minio-bucket"]["profiles"] == ["s3"]
    assert services["minio-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker compose is not installed here",
)
@pytest.mark.parametrize("profile", ["tools", "cpu-text", "s3"])
def test_docker_compose_accepts_the_file(profile):
    run = ["docker", "compose", "-f", "deploy/compose.yml", "--env-file",
           "deploy/farm.env.example", "--profile", profile, "config", "--quiet"]  # fmt: skip
    done = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------- systemd


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_a_unit_restarts_on_failure_and_stops_with_sigterm(path):
    sections = unit(path)
    assert {"Unit", "Service"} <= set(sections), path.name
    service = {key: values[-1] for key, values in sections["Service"].items()}
    assert service["User"] == "farm"
    assert "/etc/fashion-farm/farm.env" in sections["Service"]["EnvironmentFile"]
    if service.get("Type") == "oneshot":  # farm-migrate: the workers migrate again anyway
        return
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert "TimeoutStopSec" in service and "WantedBy" in "".join(sections["Install"])


def test_the_worker_unit_gives_a_warm_shutdown_time_to_drain():
    service = unit(DEPLOY / "systemd/farm-worker@.service")["Service"]
    assert service["KillMode"] == ["mixed"]  # SIGTERM to the launcher, which passes it on
    limit = Settings.model_fields["task_time_limit"].default
    assert seconds(service["TimeoutStopSec"][0]) > limit
    assert "-/etc/fashion-farm/%i.env" in service["EnvironmentFile"]


# ---------------------------------------------------------------------------- Kubernetes


def test_every_object_is_in_the_farms_namespace():
    for o in manifests():
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == "fashion-farm", o["metadata"]["name"]


def test_the_gpu_workers_take_one_card_each_and_drain():
    spec = pod_specs()["farm-gpu-worker"]
    worker = spec["containers"][0]
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    limit = Settings.model_fields["task_time_limit"].default
    assert spec["terminationGracePeriodSeconds"] > limit
    assert objects("Deployment")["farm-gpu-worker"]["spec"]["strategy"]["type"] == "Recreate"
    assert "replicas" not in objects("Deployment")["farm-gpu-worker"]["spec"]  # KEDA's


def test_pods_refer_to_config_secrets_and_claims_that_exist():
    configs = set(objects("ConfigMap"))
    secrets = set(objects("Secret"))
    claims = set(objects("PersistentVolumeClaim"))
    assert secrets == {"farm-secrets"}, "the example secret is the only one"
    for name, spec in pod_specs().items():
        for volume in spec.get("volumes", []):
            assert volume["persistentVolumeClaim"]["claimName"] in claims, name
        mounted = {v["name"] for v in spec.get("volumes", [])}
        for container in spec.get("initContainers", []) + spec["containers"]:
            for source in container["envFrom"]:
                ref = source.get("configMapRef") or source.get("secretRef")
                assert ref["name"] in configs | secrets, f"{name}: {ref['name']}"
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in mounted, f"{name}: volume {mount['name']}"


def test_the_example_secret_holds_placeholders_only():
    secret = objects("Secret")["farm-secrets"]
    for key, value in secret["stringData"].items():
        assert "change-me" in value, f"{key} looks like a real value"


def test_every_service_selects_a_deployment_on_a_port_it_names():
    deployments = objects("Deployment")
    for name, service in objects("Service").items():
        selector = service["spec"]["selector"].items()
        matches = [
            d
            for d in deployments.values()
            if selector <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, f"{name} selects {len(matches)} deployments"
        ports = {p["name"] for c in matches[0]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}  # fmt: skip
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{name}: {port['targetPort']}"


def redis_lists(queue: str) -> set[str]:
    """The Redis lists kombu keeps a queue in: one per priority step (tasks/app.py)."""
    return {queue if step == 0 else f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS}


def test_keda_scales_the_gpu_workers_on_every_list_of_their_queues():
    scaled = objects("ScaledObject")["farm-gpu-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] in objects("Deployment")
    queues = {STAGES[name].queue for name in ROLES["all"]}
    assert queues == {"farm.text", "farm.gpu"}
    expected = set().union(*(redis_lists(q) for q in queues))
    triggers = scaled["triggers"]
    assert {t["metadata"]["listName"] for t in triggers} == expected
    assert len(triggers) == len(expected)
    # The formula adds every trigger; the address is the broker's.
    terms = scaled["advanced"]["scalingModifiers"]["formula"].split(" + ")
    assert sorted(terms) == sorted(t["name"] for t in triggers)
    broker = urlsplit(objects("Secret")["farm-secrets"]["stringData"]["FARM_BROKER_URL"])
    auth = objects("TriggerAuthentication")
    for trigger in triggers:
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["address"] == f"{broker.hostname}:{broker.port}"
        assert trigger["metadata"]["databaseIndex"] == broker.path.strip("/")
        assert trigger["authenticationRef"]["name"] in auth
    for ref in auth["farm-redis"]["spec"]["secretTargetRef"]:
        assert ref["key"] in objects("Secret")[ref["name"]]["stringData"]


def test_the_stage_queues_are_the_ones_keda_reads():
    """A stage routed to another queue would go unseen by the autoscaler."""
    assert {stage.queue for stage in STAGES.values()} == {"farm.text", "farm.gpu"}


# ---------------------------------------------------------------------------- sizing


def test_the_sizing_table_is_the_cost_tables_arithmetic():
    """deploy/README.md's per-card figures follow from bench/costs.toml at the shipped batch
    sizes (text 32 on a card, CLIP 4, renders one at a time)."""

    def per_article(profile: str) -> float:
        costs = profile_costs(profile)
        image = costs["render"].per_article(1) + costs["score"].per_article(4)
        return image + costs["translate"].per_article(32) + costs["extract"].per_article(32)

    readme = (DEPLOY / "README.md").read_text()
    render = profile_costs("h100")["render"].per_article(1)
    for cards in (1, 2, 4, 8):
        cells = [render, per_article("h100"), per_article("h100-eager")]
        row = " | ".join(f"{round(cards * 3600 / s, -1):,.0f}" for s in cells)
        assert f"| {cards} | {row} |" in readme, f"sizing row for {cards} cards"
    settings = Settings(device="cuda")
    assert settings.text_batch() == 32 and settings.score_batch_size == 4
