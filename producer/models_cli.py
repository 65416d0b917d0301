"""``farm models fetch|check|mirror`` and ``farm doctor``: the models a profile loads, and
what a worker on this machine will do with them.

Nothing here imports torch at module level: the commands load the model libraries only when
they run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from tasks.settings import Settings
from workers.hub import size_text

console = Console(stderr=True, soft_wrap=True)
# Exit codes of these commands (README, "Models").
EXIT_MISSING = 1
EXIT_FETCH_FAILED = 4


def _profile(settings: Settings):
    from workers.profiles import resolve_profile

    return resolve_profile(settings.profile, settings.model_cache, **settings.profile_overrides())


def require_models(settings: Settings, stages=None) -> None:
    """Exit 1 with one message when a model of the profile is not in the cache.

    ``farm run`` checks before it writes a batch, so a missing model leaves nothing behind;
    ``farm worker`` before it starts a worker process.

    Args:
        settings: the farm's settings (profile, overrides, model cache).
        stages: the stages whose models are needed (all four when omitted).
    """
    from workers.hub import check_profile, describe_missing

    if settings.runtime_factory:  # benchmarks bring their own runtimes
        return
    profile = _profile(settings)
    message = describe_missing(check_profile(profile, stages), profile)
    if message:
        console.print(message, style="red", markup=False, highlight=False)
        sys.exit(EXIT_MISSING)


@click.group()
def models() -> None:
    """The models of the profile (global --profile): fetch them, check them, mirror tiny ones."""


@models.command()
@click.pass_obj
def check(settings: Settings) -> None:
    """Say per model whether it is in the cache (offline), its size and revision.

    Exits 1 when a model is missing, naming the command that fetches it.
    """
    from workers.hub import check_profile, describe_missing, hub_cache

    profile = _profile(settings)
    checks = check_profile(profile)
    click.echo(f"cache: {hub_cache()}")
    for item in checks:
        state = "present" if item.present else "missing " + (", ".join(item.missing) or "all")
        size = size_text(item.size)
        click.echo(f"{item.role:<10}  {item.model_id}@{item.revision}  {state}  {size}")
    message = describe_missing(checks, profile)
    if message:
        console.print(message, style="red", markup=False, highlight=False)
        sys.exit(EXIT_MISSING)


@models.command()
@click.pass_obj
def fetch(settings: Settings) -> None:
    """Download exactly the files the profile loads into the Hugging Face cache.

    Models already complete in the cache are not asked for again. Exits 4 when a download fails.
    """
    from huggingface_hub import constants

    from workers.hub import check_profile, fetch_command, fetch_model, is_local

    profile = _profile(settings)
    checks = check_profile(profile)
    if constants.is_offline_mode() and not all(item.present for item in checks):
        console.print(
            "HF_HUB_OFFLINE=1 is set, so nothing can be downloaded: run "
            f"HF_HUB_OFFLINE=0 {fetch_command(profile)}",
            style="red",
            markup=False,
            highlight=False,
        )
        sys.exit(EXIT_FETCH_FAILED)
    for item in checks:
        if item.present or is_local(item.model_id):
            console.print(f"{item.role} {item.model_id}: present ({size_text(item.size)})")
            continue
        console.print(f"{item.role} {item.model_id}: fetching revision {item.revision}...")
        try:
            folder = fetch_model(item.role, item.model_id, item.revision)
        except Exception as error:  # hub, network and disk errors all end the command alike
            console.print(
                f"could not fetch {item.model_id} ({item.revision}): {error}",
                style="red",
                markup=False,
                highlight=False,
            )
            sys.exit(EXIT_FETCH_FAILED)
        console.print(f"{item.role} {item.model_id}: {folder}")


@models.command()
@click.option(
    "--tiny",
    "hf_home",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to use as HF_HOME; receives hub/ with the tiny models.",
)
@click.pass_obj
def mirror(settings: Settings, hf_home: Path) -> None:
    """Write the tiny random-weight models as a Hugging Face cache under the real repo ids.

    With HF_HOME=DIR HF_HUB_OFFLINE=1, `farm --profile default ...` then loads them through
    the default profile's own loading code (tests, and a dry run of a GPU box's set-up).
    """
    from workers.hub_mirror import copy_tiny_mirror

    try:
        written = copy_tiny_mirror(settings.model_cache, hf_home)
    except OSError as error:
        message = f"cannot write {hf_home}: {error.strerror}"
        raise click.BadParameter(message, param_hint="--tiny") from None
    for repo_id in written:
        console.print(f"{repo_id}: {hf_home / 'hub'}")
    click.echo(hf_home)


@click.command()
@click.option("--load", is_flag=True, help="Also load every model and render one image.")
@click.pass_obj
def doctor(settings: Settings, load: bool) -> None:
    """What a worker on this machine will do, and why: device, memory, placement, dtype.

    Exits 1 when a model is missing or (with --load) a model fails to load or run.
    """
    from workers.doctor import examine, try_models

    profile = _profile(settings)
    report = examine(profile, settings)
    for name, value in report.facts:
        click.echo(f"{name:>29}: {value}")
    if report.problems:
        for problem in report.problems:
            console.print(problem, style="red", markup=False, highlight=False)
        sys.exit(EXIT_MISSING)
    if load:
        for name, value in try_models(profile, settings):
            click.echo(f"{name:>29}: {value}")
