"""Deployment shapes of a GPU farm, as worker processes the launcher plans.

* ``gpu``: the GPU processes serve the text queue too: ``farm worker all --gpus 0,..,N-1``,
  one model executor per card taking text and image calls in turn, every cost from the GPU
  profile;
* ``cpu``: ``farm worker gpu --gpus 0,..,N-1`` and one ``farm worker text --device cpu``
  process whose text calls cost what the ``cpu`` profile says, on no card;
* ``card``: ``farm worker gpu --gpus 0,..,N-1`` and one ``farm worker text`` process pinned
  to card 0, taking turns on it with that card's GPU process (GPU profile);
* ``cards``: ``farm worker gpu --gpus 0,..,N-1`` and ``farm worker text --gpus 0,..,N-1``, a
  text process on every card beside its GPU process, the two taking turns on it.

Every process runs ``bench.fake_runtimes:costed``: each model call sleeps its cost, holding
its card's lock (:mod:`bench.cards`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from bench import fake_runtimes
from tasks.launcher import plan_workers
from tasks.settings import Settings

SHAPES = ("gpu", "cpu", "card", "cards")
FACTORY = "bench.fake_runtimes:costed"
CPU_PROFILE = "cpu"


def worker_commands(
    shape: str,
    gpus: int,
    profile: str,
    urls: tuple[str, str],
    workdir: Path,
    text_batch: int | None = None,
    time_scale: float = 1.0,
) -> list[tuple[list[str], dict[str, str]]]:
    """Command lines and environments of a shape's worker processes, as the launcher plans them.

    Args:
        shape: ``gpu``, ``cpu``, ``card`` or ``cards``.
        gpus: the cards.
        profile: the GPU cost profile (``h100``).
        urls: (database URL, broker URL).
        workdir: scratch folder: outputs, and the cards' locks and call logs.
        text_batch: ``FARM_TEXT_BATCH_SIZE``; the shipped default when None.
        time_scale: factor on every cost.

    Returns:
        (argv, environment) per process.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    database_url, broker_url = urls
    fields = {"text_batch_size": text_batch} if text_batch else {}
    settings = Settings(
        database_url=database_url,
        broker_url=SecretStr(broker_url),
        output_dir=workdir / "output",
        runtime_factory=FACTORY,
        **fields,
    )
    # A card comes from the launcher's plan only (a text process on the CPU holds none).
    inherited = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    base = inherited | {
        "HF_HUB_OFFLINE": "1",
        fake_runtimes.CARDS_DIR_ENV: str(workdir),
        fake_runtimes.TIME_SCALE_ENV: repr(time_scale),
        fake_runtimes.COST_PROFILE_ENV: profile,
    }
    cards = [str(index) for index in range(gpus)]
    if shape == "gpu":
        return [(w.argv, base | w.env) for w in plan_workers("all", settings, cards)]
    planned = [(w.argv, base | w.env) for w in plan_workers("gpu", settings, cards)]
    if shape in ("card", "cards"):
        text = plan_workers("text", settings, cards[:1] if shape == "card" else cards)
        return planned + [(w.argv, base | w.env) for w in text]
    text = plan_workers("text", settings.model_copy(update={"device": "cpu"}))
    on_cpu = base | {fake_runtimes.COST_PROFILE_ENV: CPU_PROFILE}
    return planned + [(w.argv, on_cpu | w.env) for w in text]
