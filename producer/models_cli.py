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
EXIT_OUTPUT = 6


def _profile(settings: Settings, use_lock: bool = True):
    from tasks.model_pins import settings_profile

    return settings_profile(settings, use_lock)


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
    """Say per model whether it is in the cache (offline), its size, revision and commit.

    Exits 1 when a model (or the commit the lock file pins) is missing, naming the command
    that fetches it.
    """
    from workers.hub import check_profile, describe_missing, hub_cache

    profile = _profile(settings)
    checks = check_profile(profile)
    click.echo(f"cache: {hub_cache()}")
    click.echo(f"lock: {profile.lock_file or f'none ({settings.lock_file()} is not there)'}")
    for item in checks:
        state = "present" if item.present else "missing " + (", ".join(item.missing) or "all")
        size = size_text(item.size)
        asked = "local" if item.revision == "local" else profile.asked_revision(item.model_id)
        commit = item.commit or (item.revision if item.locked else "-")
        pinned = f"{'locked ' if item.locked else ''}{commit}"
        click.echo(f"{item.role:<10}  {item.model_id}@{asked}  {pinned}  {state}  {size}")
    message = describe_missing(checks, profile)
    if message:
        console.print(message, style="red", markup=False, highlight=False)
        sys.exit(EXIT_MISSING)


@models.command()
@click.option(
    "--update", is_flag=True, help="Resolve the revisions on the hub again; rewrite the lock file."
)
@click.pass_obj
def fetch(settings: Settings, update: bool) -> None:
    """Download exactly the files the profile loads into the Hugging Face cache, and write the
    lock file (FARM_MODELS_LOCK) naming the commit of each repo.

    With a lock file, exactly its commits are fetched; models already complete in the cache
    are not asked for again. --update asks the hub what each revision names now. Exits 4
    when a download fails.
    """
    from huggingface_hub import constants

    from workers.hub import check_profile, fetch_command

    profile = _profile(settings, use_lock=not update)
    checks = check_profile(profile)
    if constants.is_offline_mode() and (update or not all(item.present for item in checks)):
        _fail(f"HF_HUB_OFFLINE=1 is set, so nothing can be downloaded: run "
              f"HF_HUB_OFFLINE=0 {fetch_command(profile)}", EXIT_FETCH_FAILED)  # fmt: skip
    commits = {item.model_id: _fetched_commit(item, update) for item in checks}
    _write_lock(settings, profile, checks, commits, update)


def _fail(message: str, code: int) -> None:
    console.print(message, style="red", markup=False, highlight=False)
    sys.exit(code)


def _fetched_commit(item, update: bool) -> str | None:
    """Fetch one model unless the cache holds it; its commit (None for a local folder)."""
    from workers.hub import fetch_model, is_local

    if is_local(item.model_id):
        console.print(f"{item.role} {item.model_id}: local folder")
        return None
    if item.present and not update:
        console.print(f"{item.role} {item.model_id}: present ({size_text(item.size)})")
        return item.commit
    console.print(f"{item.role} {item.model_id}: fetching revision {item.revision}...")
    try:
        folder = fetch_model(item.role, item.model_id, item.revision)
    except Exception as error:  # hub, network and disk errors all end the command alike
        _fail(f"could not fetch {item.model_id} ({item.revision}): {error}", EXIT_FETCH_FAILED)
    console.print(f"{item.role} {item.model_id}: {folder}")
    return folder.name


def _write_lock(settings: Settings, profile, checks, commits: dict, update: bool) -> None:
    """Write the lock file: the entries kept, plus every hub repo fetched or found."""
    from workers.hub import loaded_files, snapshot_folder
    from workers.lock import LockedRepo, read_lock, write_lock

    path = settings.lock_file()
    repos = {} if update else dict(read_lock(path) or {})
    for item in checks:
        commit = commits[item.model_id]
        if commit is None:
            continue
        folder = snapshot_folder(item.model_id, commit)
        files = {p.relative_to(folder).as_posix(): p.stat().st_size
                 for p in loaded_files(folder, item.role)}  # fmt: skip
        asked, old = profile.asked_revision(item.model_id), repos.get(item.model_id)
        if item.locked and old.revision != asked:
            console.print(f"{item.model_id}: locked at {commit} ({old.revision}); the settings "
                          f"ask for {asked}: farm models fetch --update moves it")  # fmt: skip
        revision = old.revision if item.locked else asked
        repos[item.model_id] = LockedRepo(commit, revision, files)
    if not repos:
        return  # only local folders: nothing to pin
    try:
        write_lock(path, repos)
    except OSError as error:
        _fail(f"cannot write the lock file {path}: {error.strerror or error}", EXIT_OUTPUT)
    console.print(f"lock: {path} ({len(repos)} repos)")


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
