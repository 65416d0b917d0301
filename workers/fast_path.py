"""The GPU fast path, decided in one place: the renderer's regional compile and float8
weights, and the extractor's static KV cache.

Each switch (``FARM_RENDER_COMPILE``, ``FARM_RENDER_FP8``) is ``auto`` by default, ``on`` or
``off``. ``auto`` turns it on where it pays:

* **compile**: on a CUDA GPU with triton, unless the pipeline is placed layer by layer
  (``sequential_offload``: its hooks break compiled blocks). Compiling costs start-up time,
  which the worker logs, not an article.
* **fp8**: on compute capability 8.9 and newer (Ada, Hopper, Blackwell: float8 tensor cores)
  with torchao installed, unless even float8 weights leave the pipeline placed layer by layer
  (a card too small): then it stays bf16 and is placed as such. Only the linear layers of
  the transformer's blocks are quantised (:func:`fp8_layer`): the embedders, the AdaLN
  modulation and the final projection run once per step on small inputs and gain nothing,
  while their precision matters most.

``on`` asks for a switch whatever the device: where it cannot run, the worker fails at boot.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

Placed = TypeVar("Placed")

SWITCHES = ("auto", "on", "off")
FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper have float8 tensor cores
# The transformer's repeated blocks, whose linear layers carry nearly all of its work.
BLOCK_PREFIXES = ("transformer_blocks.", "single_transformer_blocks.")


@dataclass(frozen=True)
class FastPath:
    """What the renderer will use, and why, in words (``farm doctor`` prints them)."""

    compile: bool
    fp8: bool
    compile_reason: str
    fp8_reason: str

    def describe(self) -> str:
        """One line: ``compile on (why); fp8 off (why)``."""
        return (
            f"compile {'on' if self.compile else 'off'} ({self.compile_reason}); "
            f"fp8 {'on' if self.fp8 else 'off'} ({self.fp8_reason})"
        )


def switch(value: bool | str) -> str:
    """``auto``, ``on`` or ``off`` from a setting or a keyword (True and False included)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in SWITCHES:
        raise ValueError(f"a fast-path switch is one of {', '.join(SWITCHES)}, not {value!r}")
    return value


def check_fp8_support(device: torch.device) -> None:
    """Raise ``ValueError`` unless float8 weights can run on ``device``.

    Args:
        device: the device the renderer runs on.
    """
    needed = ".".join(map(str, FP8_MIN_CAPABILITY))
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ValueError(
            f"fp8 needs a CUDA GPU of compute capability {needed} or newer; "
            f"this renderer runs on {device}"
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        raise ValueError(
            f"fp8 needs compute capability {needed} or newer (Ada, Hopper); "
            f"{torch.cuda.get_device_name(device)} has {'.'.join(map(str, capability))}"
        )
    try:
        import torchao  # noqa: F401
    except ImportError as error:
        raise ValueError("fp8 needs torchao: pip install torchao") from error


def decide_fp8(device: torch.device, setting: bool | str) -> tuple[bool, str]:
    """Whether the transformer gets float8 weights, and why.

    Args:
        device: the renderer's device.
        setting: ``auto``, ``on`` or ``off`` (or a bool).
    """
    setting = switch(setting)
    if setting != "auto":
        return setting == "on", f"FARM_RENDER_FP8={setting}"
    try:
        check_fp8_support(device)
    except ValueError as error:
        return False, f"auto: {error}"
    return True, f"auto: compute capability {'.'.join(map(str, FP8_MIN_CAPABILITY))}+, torchao"


def decide_compile(device: torch.device, setting: bool | str, placement: str) -> tuple[bool, str]:
    """Whether the transformer's repeated blocks are compiled, and why.

    Args:
        device: the renderer's device.
        setting: ``auto``, ``on`` or ``off`` (or a bool).
        placement: the pipeline's placement (:mod:`workers.placement`).
    """
    decided = _compiles(device, setting, "FARM_RENDER_COMPILE")
    if decided is not None:
        return decided
    if placement == "sequential_offload":
        return False, "auto: sequential offload's layer hooks break compiled blocks"
    return True, "auto: CUDA GPU"


def _compiles(device: torch.device, setting: bool | str, variable: str) -> tuple | None:
    # What decides a compile switch before anything particular to it: the setting itself,
    # then a CUDA device with triton; None where auto leaves it to the caller.
    setting = switch(setting)
    if setting != "auto":
        return setting == "on", f"{variable}={setting}"
    if device.type != "cuda":
        return False, "auto: no CUDA GPU, little to gain"
    if importlib.util.find_spec("triton") is None:
        return False, "auto: triton is not installed"
    return None


def decide_static_cache(device: torch.device, setting: bool | str) -> tuple[bool, str]:
    """Whether extraction decodes with a static KV cache (compiled by transformers), and why.

    Eager decoding of a model of Phi-3-mini's size is bound by launching kernels, not by the
    card; compiled, a step costs about what reading the weights costs. On a CPU the compiled
    step gains little and compiling costs minutes.

    Args:
        device: the extractor's device.
        setting: ``FARM_EXTRACT_STATIC_CACHE``: ``auto``, ``on`` or ``off`` (or a bool).
    """
    decided = _compiles(device, setting, "FARM_EXTRACT_STATIC_CACHE")
    return decided or (True, "auto: CUDA GPU, the decoding step is compiled")


def decide(
    device: torch.device,
    compile_setting: bool | str,
    fp8_setting: bool | str,
    place: Callable[[bool], Placed],
    placement_of: Callable[[Placed], str],
) -> tuple[FastPath, Placed]:
    """The fast path and the placement together: each depends on the other.

    Args:
        device: the renderer's device.
        compile_setting: ``FARM_RENDER_COMPILE``.
        fp8_setting: ``FARM_RENDER_FP8``.
        place: the placement for float8 weights (True) or not (False).
        placement_of: the placement's name (``gpu``, ``sequential_offload``...).

    Returns:
        (the fast path, the placement it was decided with).
    """
    fp8, fp8_reason = decide_fp8(device, fp8_setting)
    placed = place(fp8)
    if fp8 and switch(fp8_setting) == "auto" and placement_of(placed) == "sequential_offload":
        fp8, fp8_reason = False, "auto: the card is too small even for float8 weights"
        placed = place(False)
    compile_, compile_reason = decide_compile(device, compile_setting, placement_of(placed))
    return FastPath(compile_, fp8, compile_reason, fp8_reason), placed


def fp8_module(name: str) -> bool:
    """Whether the FLUX transformer's module ``name`` is one fp8 quantises, were it linear.

    The linear layers of the repeated blocks' attention and feed-forward parts, not their
    AdaLN modulation (``norm*.linear``), and nothing outside the blocks.
    """
    if not name.startswith(BLOCK_PREFIXES):
        return False
    return not any(part.startswith("norm") for part in name.split("."))


def fp8_layer(module: torch.nn.Module, name: str) -> bool:
    """torchao's ``filter_fn``: a linear layer that :func:`fp8_module` chooses."""
    return isinstance(module, torch.nn.Linear) and fp8_module(name)
