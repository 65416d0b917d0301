"""The one settings object of the farm, read from ``FARM_*`` environment variables and flags."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tasks.storage import output_location

# Where the lock file lives unless FARM_MODELS_LOCK says: beside the farm's model cache.
LOCK_FILE_NAME = "models.lock.json"
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _switch(value: object) -> object:
    """``1``/``true``/``yes`` read as ``on`` and ``0``/``false``/``no`` as ``off``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        lowered = value.strip().lower()
        return {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off",
                "no": "off"}.get(lowered, lowered)  # fmt: skip
    return value


# A fast-path switch of the renderer: auto (where it pays), on or off.
FastPathSwitch = Annotated[Literal["auto", "on", "off"], BeforeValidator(_switch)]


def parse_revisions(value: object) -> dict[str, str]:
    """Repo id → revision, from JSON (``{"org/name": "v2"}``) or ``org/name=v2,org/b=<commit>``.

    Args:
        value: the setting's value: a mapping, or text in one of the two forms.

    Returns:
        The mapping.

    Raises:
        ValueError: the value is neither form, or names something that is not a repo id.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as error:
                raise ValueError(f"not valid JSON ({error})") from None
        else:
            value = dict(_pair(item) for item in text.split(",") if item.strip())
    if not isinstance(value, dict):
        raise ValueError('expected {"org/name": "revision"} or org/name=revision,...')
    for repo_id, revision in value.items():
        if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id):
            raise ValueError(f"{repo_id!r} is not a hub repo id (org/name)")
        if not isinstance(revision, str) or not revision.strip():
            raise ValueError(f"{repo_id} has no revision (a branch, tag or commit)")
    return {repo_id: revision.strip() for repo_id, revision in value.items()}


def _pair(item: str) -> tuple[str, str]:
    repo_id, equals, revision = item.partition("=")
    if not equals:
        raise ValueError(f"{item.strip()!r} is not org/name=revision")
    return repo_id.strip(), revision


# NoDecode: the variable is not JSON-decoded before parse_revisions, which reads both forms.
Revisions = Annotated[dict[str, str], NoDecode, BeforeValidator(parse_revisions)]


# Articles per text call (FARM_TEXT_BATCH_SIZE unset). On a CPU a call's cost grows with its
# articles, so a small batch loses little; on a GPU decoding is bound by the weights read
# per step, whatever the batch, and the card renders between text calls: bench.scale
# --costs h100 measures the farm's rate against this batch size.
TEXT_BATCH_SIZE_CPU = 8
TEXT_BATCH_SIZE_GPU = 32


class Settings(BaseSettings):
    """Everything configurable, read once per process and passed down.

    Each field is the env var ``FARM_<NAME>``; the CLI's flags override them.
    """

    model_config = SettingsConfigDict(env_prefix="FARM_", extra="ignore")

    database_url: str = "sqlite:///farm.db"
    broker_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # A folder, or an object store's URL (s3://bucket/prefix), kept as text: tasks.storage.
    output_dir: Annotated[Path | str, BeforeValidator(output_location)] = Path("output")

    profile: str = "default"
    model_cache: Path = Field(default_factory=lambda: Path.home() / ".cache" / "fashion-farm")
    device: str = "auto"
    worker_role: str = "all"
    translator_model: str | None = None
    extractor_model: str | None = None
    renderer_model: str | None = None
    lora: str | None = None
    scorer_model: str | None = None
    # Repo id → branch, tag or commit, for the repos not loaded at "main" (the LoRA's too).
    model_revisions: Revisions = Field(default_factory=dict)
    # The lock file: repo id → commit, written by `farm models fetch`; copied to every
    # machine, they all load the same weights. Default: models.lock.json in model_cache.
    models_lock: Path | None = None
    # "module:function" returning workers.loader.Runtimes; replaces the model loading
    # (benchmarks use it for runtimes of a fixed cost).
    runtime_factory: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    # The renderer's GPU fast path: auto turns each on where it pays (workers.fast_path).
    render_compile: FastPathSwitch = "auto"
    render_fp8: FastPathSwitch = "auto"
    render_memory_mode: str = "auto"
    # Phi-3 with a static KV cache; on a CUDA GPU transformers compiles its decoding step.
    # auto: on where it pays, a CUDA GPU with triton (workers.fast_path.decide_static_cache).
    extract_static_cache: FastPathSwitch = "auto"
    # Articles per model call: a worker process holds this many text messages at once and
    # the model executor gathers the inputs waiting (for at most batch_wait_seconds) into one
    # call. Renders go one per call (FLUX at 1024x1024 is compute-bound at one image).
    # Unset: TEXT_BATCH_SIZE_CPU, or TEXT_BATCH_SIZE_GPU in a process on a GPU (--gpus or
    # FARM_DEVICE=cuda), where a call's cost is nearly all per call, not per article.
    text_batch_size: int | None = Field(default=None, ge=1)
    score_batch_size: int = Field(default=4, ge=1)
    batch_wait_seconds: float = Field(default=0.02, ge=0, le=5)
    # farm run on one machine: "stagewise" runs every text stage, unloads the text models,
    # then renders and scores; "together" keeps all four loaded; "auto" picks stagewise on a
    # GPU with too little free memory for all of them (workers.devices.holds_all_models).
    run_schedule: Literal["auto", "together", "stagewise"] = "auto"

    # Delivery. A stage's lease is renewed while it runs (every third of lease_seconds), so
    # it runs out soon after its worker dies; the reaper then sends the article again. The
    # broker's visibility timeout only brings back messages of workers that died, which by
    # then find their stage done. One model call may run task_time_limit seconds before the
    # watchdog stops its worker. Each stage of an article is claimed at most
    # max_stage_attempts times (errors, deaths and time-outs alike), then it fails.
    task_time_limit: int = Field(default=900, gt=0)
    lease_seconds: int = Field(default=45, ge=3)
    visibility_timeout: int = 3600
    max_stage_attempts: int = Field(default=5, ge=1)
    retry_backoff_seconds: float = Field(default=2.0, ge=0)
    # How often the reaper looks for articles no message will move on (one worker per turn).
    reaper_seconds: float = Field(default=10.0, gt=0)
    # A worker publishes its task events for Flower at most this often, several per
    # message (tasks.events); 0 publishes each on its own, as Celery does.
    event_flush_seconds: float = Field(default=0.1, ge=0, le=5)

    flower_basic_auth: SecretStr | None = None  # "user:password"

    # Views rendered per catalog row, comma-separated (front, back, side, detail); a catalog
    # submitted with --views keeps its views on later submits.
    views: str = "front"

    # The review studio. The session cookie is signed with review_secret (a random one per
    # start when unset, which logs everyone out on restart). When review_auth_header is set
    # (e.g. X-Forwarded-User), a reverse proxy that authenticated the user names them there.
    review_secret: SecretStr | None = None
    review_auth_header: str | None = None
    # The peers whose review_auth_header is believed (IPs or networks, comma-separated): the
    # reverse proxy's address, never the public's.
    # Used only when review_auth_header is set: without it no peer is a proxy.
    review_trusted_proxies: str = "127.0.0.1,::1"
    # Mark the session cookie Secure: set it when the studio is served through HTTPS.
    review_https_only: bool = False

    max_cell_chars: int = 10_000
    min_clip_score: float | None = None
    max_attempts: int = 3

    def as_env(self) -> dict[str, str]:
        """These settings as ``FARM_*`` variables, so that a child process reads the same values.

        Returns:
            Variable name → value, for every field that is set.
        """
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(getattr(self, name), SecretStr):
                value = getattr(self, name).get_secret_value()
            text = json.dumps(value) if isinstance(value, dict) else str(value)
            env[f"FARM_{name.upper()}"] = text
        return env

    def text_batch(self) -> int:
        """Articles per translator or extractor call in this process (``text_batch_size``
        when set, else the default for the process's device)."""
        if self.text_batch_size:
            return self.text_batch_size
        return TEXT_BATCH_SIZE_GPU if self.device.startswith("cuda") else TEXT_BATCH_SIZE_CPU

    def render_options(self) -> dict:
        """The renderer's load options (``Renderer.from_pretrained``) from these settings."""
        return {
            "compile": self.render_compile,
            "fp8": self.render_fp8,
            "memory_mode": self.render_memory_mode,
        }

    def extract_options(self) -> dict:
        """The extractor's load options (``Extractor.from_pretrained``) from these settings,
        for the worker and ``farm doctor --load`` alike."""
        return {"static_cache": self.extract_static_cache, "max_batch": self.text_batch()}

    def lock_file(self) -> Path:
        """The models' lock file: ``models_lock``, else ``models.lock.json`` in the model cache."""
        return self.models_lock or self.model_cache / LOCK_FILE_NAME

    def output_shape(self) -> dict:
        """The settings that shape an article's outputs (part of its content hash).

        Returns:
            Profile name and every model/shape override, ``None`` where not overridden.
        """
        return {"profile": self.profile, **self.profile_overrides()}

    def profile_overrides(self) -> dict:
        """Model and shape overrides in :class:`workers.profiles.Profile` field names.

        Returns:
            Field name → value, ``None`` where nothing was overridden.
        """
        return {
            "translator": self.translator_model,
            "extractor": self.extractor_model,
            "renderer": self.renderer_model,
            "lora": self.lora,
            "scorer": self.scorer_model,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
        }
