"""The cost table: what one model call takes per machine profile and stage, with its sources.

``bench/costs.toml`` holds, for each profile (``h100``, ``h100-eager``, ``cpu``) and stage,
two figures, each with its source: a call over ``n`` inputs takes ``per_call + per_item * n``
seconds. That is good enough for memory-bound decoding, where the per-call part dominates,
and for a renderer called with one image at a time. A profile that says ``like = "other"``
takes the other profile's stages that it does not list (``h100-eager`` is ``h100`` with
eager extraction).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, installed as tomli
    import tomli as tomllib

TABLE = Path(__file__).with_name("costs.toml")
FIGURES = ("per_call", "per_item")
LIKE = "like"  # a profile's key naming the profile whose other stages it takes


@dataclass(frozen=True)
class StageCost:
    """One stage's cost on one profile.

    Attributes:
        per_call: seconds every call takes, whatever its size.
        per_item: seconds each input adds.
        sources: figure name → where it comes from.
    """

    per_call: float
    per_item: float
    sources: dict[str, str]

    def seconds(self, count: int) -> float:
        """Seconds one call over ``count`` inputs takes."""
        return self.per_call + self.per_item * count

    def per_article(self, batch: int) -> float:
        """Seconds per input when calls take ``batch`` inputs."""
        return self.seconds(batch) / batch


def load(path: Path | str = TABLE) -> dict[str, dict[str, StageCost]]:
    """Read and check the cost table.

    Args:
        path: the TOML file.

    Returns:
        Profile → stage → cost.

    Raises:
        ValueError: a figure is missing, negative, or names no source; a profile is like
            one that is missing or is itself like another.
    """
    raw = tomllib.loads(Path(path).read_text())
    table = {
        profile: {
            stage: _stage(profile, stage, figures)
            for stage, figures in stages.items()
            if stage != LIKE
        }
        for profile, stages in raw.items()
    }
    for profile, stages in raw.items():
        base = stages.get(LIKE)
        if base is None:
            continue
        if base not in raw or LIKE in raw[base]:
            raise ValueError(f"{profile}: like {base!r} must name a profile that is like none")
        table[profile] = table[base] | table[profile]
    return table


def _stage(profile: str, stage: str, figures: dict) -> StageCost:
    values, sources = {}, {}
    for name in FIGURES:
        where = f"{profile}.{stage}.{name}"
        entry = figures.get(name)
        if not isinstance(entry, dict) or "seconds" not in entry:
            raise ValueError(f"{where}: no seconds")
        if not str(entry.get("source", "")).strip():
            raise ValueError(f"{where}: a figure must name its source")
        if entry["seconds"] < 0:
            raise ValueError(f"{where}: negative seconds")
        values[name], sources[name] = float(entry["seconds"]), entry["source"]
    return StageCost(values["per_call"], values["per_item"], sources)


def profile_costs(profile: str, path: Path | str = TABLE) -> dict[str, StageCost]:
    """The costs of one profile.

    Args:
        profile: ``h100``, ``h100-eager``, ``cpu``...
        path: the TOML file.

    Raises:
        ValueError: the table has no such profile.
    """
    table = load(path)
    if profile not in table:
        raise ValueError(f"no profile {profile!r} in {path}; choose one of {', '.join(table)}")
    return table[profile]
