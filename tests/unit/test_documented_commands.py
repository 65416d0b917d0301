"""Every command the docs show is checked against what it names, so the docs cannot drift.

Where commands are found:

* README.md and deploy/README.md: the lines of shell-tagged fenced blocks (sh, bash, shell,
  console), and inline code spans in the prose that start with a program a reader runs
  (``farm``, ``make``, ``python -m``, ``pip install``, ``docker``). Untagged blocks hold
  diagrams and sample output, not commands.
* deploy/compose.yml, deploy/Dockerfile, deploy/farm.env.example, deploy/systemd/*.service,
  deploy/kubernetes/**/*.yaml:
  comment lines written as ``#   command`` (a hash and two or more spaces; prose comments
  have one space), each unit's ExecStart (for every worker role), and the ``command:`` of
  every compose service built from deploy/Dockerfile (whose entrypoint is ``farm``).
  Services running a third-party image (redis, postgres) are left out: their commands belong
  to that image and nothing of ours could check them.

Each line is dispatched on its program (`CHECKS`); a program without a check fails.
"""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from producer.cli import main

ROOT = Path(__file__).resolve().parents[2]
MARKDOWN = ["README.md", "deploy/README.md"]
KUBERNETES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deploy/kubernetes").rglob("*.yaml"))
COMMENTED = ["deploy/compose.yml", "deploy/Dockerfile", "deploy/farm.env.example", *KUBERNETES]
UNITS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deploy/systemd").glob("*.service"))
SHELL_FENCES = {"sh", "bash", "shell", "console"}
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
COMPOSE_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
INLINE_COMMAND = re.compile(
    r"`((?:[A-Z_]+=\S+ )*(?:farm|make|python -m|pip install|docker) [^`]*|farm|make \w+)`"
)


def _read(path: str) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


def _joined(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join lines ending in a backslash with the next, keeping the first line's number."""
    out: list[tuple[int, str]] = []
    pending = None
    for number, line in lines:
        if pending:
            number, line = pending[0], pending[1] + " " + line.strip()
        pending = (number, line.rstrip()[:-1]) if line.rstrip().endswith("\\") else None
        if not pending and line.strip():
            out.append((number, line.strip()))
    return out


def fenced_commands(path: str) -> list[tuple[str, str]]:
    """The command lines of the shell-tagged fenced blocks of a markdown file."""
    lines, tag = [], None
    for number, line in enumerate(_read(path).splitlines(), 1):
        if line.strip().startswith("```"):
            tag = line.strip()[3:].strip() if tag is None else None
        elif tag in SHELL_FENCES:
            lines.append((number, line))
    return [(f"{path}:{n}", line) for n, line in _joined(lines)]


def inline_commands(path: str) -> list[tuple[str, str]]:
    """Commands written as inline code in a markdown file's prose (outside fenced blocks)."""
    found, fenced = [], False
    for number, line in enumerate(_read(path).splitlines(), 1):
        if line.strip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            found += [(f"{path}:{number}", m.group(1)) for m in INLINE_COMMAND.finditer(line)]
    # Prose names a command ("`farm run` checks ...") without the arguments it needs: such a
    # name is checked for existing, everything else is parsed in full.
    return [
        (where, "farm-name" + line.removeprefix("farm") if names_a_command(line) else line)
        for where, line in found
    ]


def names_a_command(line: str) -> bool:
    """Whether ``line`` is ``farm`` followed only by words that are (sub)command names."""
    words, command = line.split(), main
    if words[0] != "farm":
        return False
    for word in words[1:]:
        if not isinstance(command, click.Group) or word not in command.commands:
            return False
        command = command.commands[word]
    return True


def check_farm_name(args: list[str]) -> None:
    """``farm [GROUP] COMMAND`` named in prose: the words name a command of the CLI."""
    command = main
    for word in args:
        assert isinstance(command, click.Group), f"farm {shlex.join(args)}: {word!r} is extra"
        command = command.commands.get(word)
        assert command is not None, f"farm {shlex.join(args)}: no command {word!r}"


def comment_commands(path: str) -> list[tuple[str, str]]:
    """The ``#   command`` comment lines of a deploy file (prose comments have one space)."""
    lines = []
    for number, line in enumerate(_read(path).splitlines(), 1):
        found = re.match(r"\s*#\s{2,}(\S.*)", line)
        if found:
            lines.append((number, found.group(1)))
    return [(f"{path}:{n}", line) for n, line in _joined(lines)]


def worker_roles() -> list[str]:
    """The roles `farm worker` accepts: the values a unit's %i can take."""
    role = next(p for p in main.commands["worker"].params if p.name == "role")
    return list(role.type.choices)


def exec_start(unit: str, role: str) -> str:
    """The unit's ExecStart for ROLE, with FARM_WORKER_ARGS as the unit's comments give it."""
    text = _read(unit)
    documented = dict(re.findall(r'For the (\w+) role, .*FARM_WORKER_ARGS holds "([^"]*)"', text))
    line = re.search(r"^ExecStart=(.*)$", text, re.M).group(1)
    line = line.replace("$FARM_WORKER_ARGS", documented.get(role, ""))
    return line.replace("%i", role)


def compose_file(path: str = "deploy/compose.yml") -> dict:
    """The compose file as YAML (merge keys resolved)."""
    return yaml.safe_load(_read(path))


def compose_farm_commands() -> list[tuple[str, str]]:
    """``farm`` plus each farm-image service's command, ${VAR} as a plausible value."""
    env = dict(re.findall(r"^(\w+)=(.*)$", _read("deploy/farm.env.example"), re.M))

    def substitute(found: re.Match) -> str:
        return found.group(2) if found.group(2) is not None else env.get(found.group(1), "x")

    out = []
    for name, service in compose_file()["services"].items():
        if "image" in service or "command" not in service:
            continue  # a third-party image, or a service run only with `compose run`
        argv = [COMPOSE_VAR.sub(substitute, str(arg)) for arg in service["command"]]
        out.append((f"deploy/compose.yml services.{name}.command", shlex.join(["farm", *argv])))
    return out


def documented_commands() -> list[tuple[str, str]]:
    """Every (where, command line) the docs show."""
    items = [item for path in MARKDOWN for item in fenced_commands(path)]
    items += [item for path in MARKDOWN for item in inline_commands(path)]
    items += [item for path in COMMENTED + UNITS for item in comment_commands(path)]
    items += [(f"{u} ExecStart (%i={r})", exec_start(u, r)) for u in UNITS for r in worker_roles()]
    return items + compose_farm_commands()


def _remaining(ctx: click.Context) -> list[str]:
    # click 8.2+ deprecates protected_args (9.0 drops it and leaves everything in args).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*getattr(ctx, "protected_args", []), *ctx.args]


def parse_farm(args: list[str]) -> None:
    """Parse ``farm ARGS`` down to the leaf command without running it; then ``--help``."""
    try:
        ctx, command = main.make_context("farm", list(args)), main
        while isinstance(command, click.Group):
            name, command, rest = command.resolve_command(ctx, _remaining(ctx))
            ctx = command.make_context(name, rest, parent=ctx)
    except click.ClickException as error:
        raise AssertionError(f"farm {shlex.join(args)}: {error.format_message()}") from None
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, f"farm {shlex.join(args)} --help: {result.output}"


def check_farm(args: list[str]) -> None:
    """A synopsis's ``[optional parts]`` are checked both left out and all written."""
    if not any(arg.startswith("[") for arg in args):
        return parse_farm(args)
    without, depth = [], 0
    for arg in args:
        depth += arg.count("[")
        if depth == 0:
            without.append(arg)
        depth -= arg.count("]")
    parse_farm(without)
    parse_farm([arg.strip("[]") for arg in args])


def check_make(args: list[str]) -> None:
    """Each target is defined in the Makefile and each VAR=value names a Makefile variable."""
    makefile = _read("Makefile")
    targets = {
        t for line in re.findall(r"^([\w.$()/ -]+):(?!=)", makefile, re.M) for t in line.split()
    }
    for arg in args:
        if ENV_ASSIGNMENT.match(arg):
            var = arg.split("=")[0]
            assert re.search(rf"^(export )?{var}\s*[?:]?=", makefile, re.M), f"no make var {var}"
        else:
            assert arg in targets, f"make {arg}: no such target in the Makefile"


def check_python(args: list[str]) -> None:
    """``python -m MODULE ARGS``: ``--help`` exits 0, and the module's parse_args takes ARGS."""
    assert args[:1] == ["-m"], f"python {shlex.join(args)}: only `python -m MODULE` is checked"
    module, rest = args[1], args[2:]
    run = [sys.executable, "-m", module, *rest, "--help"]
    done = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{shlex.join(run)}: {done.stderr[-2000:]}"
    parse_args = getattr(importlib.import_module(module), "parse_args", None)
    if parse_args is not None:
        try:
            parse_args(rest)
        except SystemExit as error:
            raise AssertionError(f"python -m {module}: rejects {shlex.join(rest)}") from error


def check_pip(args: list[str]) -> None:
    """``pip install PACKAGE`` or ``pip install -e .[EXTRA]``: the extras exist in pyproject."""
    assert args[:1] == ["install"], f"pip {args}: only pip install is documented"
    for target in args[1:]:
        extras = re.fullmatch(r"\.(?:\[(.+)\])?", target)
        if extras and extras.group(1):
            section = _read("pyproject.toml").split("[project.optional-dependencies]")[1]
            declared = re.findall(r"^(\w+) = \[", section.split("\n[")[0], re.MULTILINE)
            for extra in extras.group(1).split(","):
                assert extra in declared, f"pip install {target}: no extra {extra!r}"


def check_cp(args: list[str]) -> None:
    """``cp SRC DST``: the source exists and the destination's folder does."""
    src, dst = args
    assert (ROOT / src).is_file(), f"cp: {src} does not exist"
    assert (ROOT / dst).parent.is_dir(), f"cp: no folder for {dst}"


def check_systemctl(args: list[str]) -> None:
    """Each ``farm-worker@ROLE`` unit exists in deploy/systemd and its ExecStart parses."""
    units = [arg for arg in args[1:] if not arg.startswith("-")]
    verbs = {"enable", "start", "restart", "stop", "disable"}
    assert args[0] in verbs and units, f"systemctl {shlex.join(args)}"
    for unit in units:
        name, _, role = unit.partition("@")
        path = f"deploy/systemd/{name}@.service" if role else f"deploy/systemd/{name}.service"
        assert (ROOT / path).is_file(), f"systemctl: no unit {path} for {unit}"
        check_command(exec_start(path, role))


def _options(args: list[str], allowed: set[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Leading ``--flag VALUE`` pairs (flags must be in ALLOWED) and what follows them."""
    pairs = []
    while args and args[0].startswith("-"):
        assert args[0] in allowed, f"option {args[0]} is not checked here"
        pairs.append((args[0], args[1]))
        args = args[2:]
    return pairs, args


def check_docker_build(args: list[str]) -> None:
    """``docker build -f FILE --build-arg NAME=VALUE ... CONTEXT``: each NAME is an ARG."""
    options, rest = _options(args, {"-f", "--file", "--build-arg", "-t", "--tag"})
    dockerfile = _read(dict(options).get("-f", "Dockerfile"))
    for flag, value in options:
        name = value.split("=")[0]
        if flag == "--build-arg":
            assert re.search(rf"^ARG {name}\b", dockerfile, re.M), f"Dockerfile: no ARG {name}"
    assert rest and (ROOT / rest[0]).is_dir(), f"docker build: context {rest}"


def check_compose(args: list[str]) -> None:
    """``compose -f FILE [--env-file F] [--profile P] up -d`` / ``run --rm SERVICE FARM_ARGS``
    / ``stop SERVICE``."""
    options, rest = _options(args, {"-f", "--file", "--env-file", "--profile"})
    files = [value for flag, value in options if flag in {"-f", "--file"}]
    assert files, "docker compose without -f: the file is not named"
    services = compose_file(files[0])["services"]
    for flag, value in options:
        example = ROOT / (value + ".example")  # the documented `cp` makes it from this
        assert flag != "--env-file" or (ROOT / value).is_file() or example.is_file(), value
        profiles = {p for service in services.values() for p in service.get("profiles", [])}
        assert flag != "--profile" or value in profiles, f"compose: no profile {value}"
    if rest[0] == "up":
        assert set(rest[1:]) <= {"-d", "--detach", "--build"}, f"compose up {rest[1:]}"
        return
    if rest[0] == "stop":
        assert rest[1:] and set(rest[1:]) <= set(services), f"compose stop {rest[1:]}"
        return
    assert rest[0] == "run", f"docker compose {rest[0]}: not checked"
    after = rest[1:]
    while after and after[0].startswith("-"):
        if after[0] in {"-e", "--env"}:  # -e NAME=VALUE
            assert ENV_ASSIGNMENT.match(after[1]), f"compose run -e {after[1]}"
            after = after[2:]
        else:
            assert after[0] == "--rm", f"compose run {after[0]}: not checked"
            after = after[1:]
    service, *farm_args = after
    assert service in services and "image" not in services[service], f"{service}: no farm image"
    check_farm(farm_args)


def check_docker(args: list[str]) -> None:
    """``docker build`` and ``docker compose``; other docker commands are not checked."""
    checks = {"build": check_docker_build, "compose": check_compose}
    assert args[0] in checks, f"docker {args[0]}: not checked"
    checks[args[0]](args[1:])


def kubernetes_objects() -> list[dict]:
    """Every object of the Kubernetes manifests (the kustomizations themselves left out)."""
    objects = []
    for path in KUBERNETES:
        if Path(path).name != "kustomization.yaml":
            objects += [doc for doc in yaml.safe_load_all(_read(path)) if doc]
    return objects


KUBE_KINDS = {"deploy": "Deployment", "deployment": "Deployment", "job": "Job",
              "svc": "Service", "service": "Service"}  # fmt: skip


def check_kubectl(args: list[str]) -> None:
    """``kubectl [-n NS] VERB ...``: files and kustomizations exist, named objects (kind/name)
    are in deploy/kubernetes, and a command run by ``exec ... --`` is checked itself."""
    objects = kubernetes_objects()
    if "--" in args:
        check_command(shlex.join(args[args.index("--") + 1 :]))
        args = args[: args.index("--")]
    if args[0] in {"-n", "--namespace"}:
        namespaces = {o["metadata"].get("namespace") for o in objects}
        assert args[1] in namespaces, f"kubectl -n {args[1]}: no manifest is in it"
        args = args[2:]
    verb, *rest = args
    if verb == "apply":
        flag, target = rest
        if flag == "-k":
            assert (ROOT / target / "kustomization.yaml").is_file(), f"no kustomization in {target}"
        else:
            example = ROOT / target.replace(".yaml", ".example.yaml")  # `cp` makes it from this
            assert flag == "-f" and ((ROOT / target).is_file() or example.is_file()), target
        return
    assert verb in {"wait", "scale", "exec", "port-forward", "delete"}, f"kubectl {verb}"
    words = [arg for arg in rest if not arg.startswith("-")]
    if verb == "delete":  # kubectl delete KIND NAME
        words = [f"{words[0]}/{words[1]}"]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for word in words:
        if re.fullmatch(r"\d+:\d+", word):  # port-forward's LOCAL:REMOTE
            continue
        kind, _, name = word.partition("/")
        assert (KUBE_KINDS.get(kind), name) in names, f"kubectl {verb}: no {word} in the manifests"


CHECKS = {
    "farm": check_farm,
    "make": check_make,
    "python": check_python,
    "python3": check_python,
    "pip": check_pip,
    "farm-name": check_farm_name,
    "cp": check_cp,
    "systemctl": check_systemctl,
    "docker": check_docker,
    "kubectl": check_kubectl,
}


def check_command(line: str) -> None:
    """Check one documented command line: comments and leading VAR=value dropped."""
    argv = shlex.split(line, comments=True)
    while argv and ENV_ASSIGNMENT.match(argv[0]):
        argv = argv[1:]
    assert argv, f"{line!r}: no command"
    program = Path(argv[0]).name
    assert program in CHECKS, f"{line!r}: no check knows {program!r}; add one to {__name__}"
    CHECKS[program](argv[1:])


COMMANDS = documented_commands()


def _label(where: str, line: str) -> str:
    """A test id: where the command is, and the command without its trailing comment."""
    return where + ": " + re.sub(r"\s+# .*$", "", line)


@pytest.mark.parametrize("line", [c for _, c in COMMANDS], ids=[_label(*c) for c in COMMANDS])
def test_every_documented_command_parses_against_what_it_names(line):
    check_command(line)


# deploy/farm.env.example is scanned too, but its comments hold no command today.
@pytest.mark.parametrize("path", [*MARKDOWN, "deploy/compose.yml", "deploy/Dockerfile", *UNITS])
def test_every_doc_file_shows_commands_the_test_finds(path):
    assert any(where.startswith(path) for where, _ in COMMANDS), f"no command found in {path}"


@pytest.mark.parametrize(
    "line",
    [
        "farm worker gpu --device cpu",  # the README line of issue 13: --device is global
        "farm status [--jsn]",  # a misspelt optional part of a synopsis
        "farm export",  # a missing argument
        "farm models fetsh",  # an unknown subcommand of a group
        "curl https://example.org",  # a program no check knows
        "make nosuch",  # a target the Makefile lacks
        "make setup TORCH_SEPC=torch",  # a variable the Makefile lacks
        "python -m bench.claims --artcles 200",  # an option the module's parser lacks
        "systemctl enable --now farm-worker@cpu",  # a role farm worker lacks
        "docker compose -f deploy/compose.yml --profile gpus up -d",  # a profile it lacks
        "kubectl apply -k deploy/nowhere",  # no kustomization there
        "kubectl -n fashion-farm scale deployment/farm-cpu-worker --replicas=2",  # no such
        "kubectl -n fashion-farm exec -i deploy/farm-flower -- farm review add-usr anna",
    ],
)
def test_a_command_the_code_does_not_take_fails(line):
    with pytest.raises(AssertionError):
        check_command(line)


@pytest.mark.parametrize(
    "line",
    [
        "make setup TORCH_SPEC='torch --index-url https://download.pytorch.org/whl/cu128'",
        ".venv/bin/python -m bench.claims --articles 200",
        "farm --device cpu worker gpu  # the README line of issue 13, fixed",
    ],
)
def test_commands_the_docs_do_not_show_yet_are_checked_too(line):
    check_command(line)


def test_the_gpu_service_image_installs_the_gpu_extra():
    """float8 render weights (on by default on 8.9+ cards) need torchao: the `gpu` extra."""
    assert re.search(r"^gpu = \[.*torchao", _read("pyproject.toml"), re.M)
    dockerfile = _read("deploy/Dockerfile")
    assert re.search(r'^RUN pip install "\.\$\{?EXTRAS\}?"', dockerfile, re.M)
    default = re.search(r'^ARG EXTRAS="?([^"\n]*)"?', dockerfile, re.M).group(1)
    gpu_services = {
        name: service
        for name, service in compose_file()["services"].items()
        if service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    }
    assert gpu_services, "compose.yml reserves no GPU for any service"
    for name, service in gpu_services.items():
        extras = service["build"].get("args", {}).get("EXTRAS", default)
        names = re.fullmatch(r"\[(.*)\]", extras.strip())
        assert names and "gpu" in names.group(1).split(","), f"{name}: EXTRAS={extras!r}"
