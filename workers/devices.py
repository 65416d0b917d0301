"""Which torch device and dtype a runtime runs on."""

from __future__ import annotations

import gc

import torch

# What the default profile's four models take on one card in bf16, with room to run them:
# FLUX.1-schnell with its T5-XXL and CLIP encoders and VAE (~34 GB), Phi-3-mini (~7.6 GB),
# CLIP ViT-L/14 and opus-mt (~1.2 GB), activations and the CUDA context on top.
ALL_MODELS_BYTES = 48 * 2**30
# The first CUDA compute capability with native bf16 (Ampere); T4 (7.5) and V100 (7.0) lack it.
BF16_MIN_MAJOR = 8


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a device name from the settings into a ``torch.device``.

    Args:
        name: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The device. Raises ``ValueError`` when CUDA is asked for and missing.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """The weight dtype: bf16 on a card with native bf16, fp16 on older cards, fp32 on a CPU.

    bf16 is what FLUX and Phi-3 are served in; fp16 is what the original pipeline used on
    smaller cards.

    Args:
        device: the device the weights live on.

    Returns:
        The dtype to load weights in.
    """
    if device.type != "cuda":
        return torch.float32
    # bf16 arithmetic came with Ampere (compute capability 8.0). torch.cuda.is_bf16_supported()
    # also says yes on older cards where bf16 is only emulated (slowly), so ask the card itself.
    major, _minor = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= BF16_MIN_MAJOR else torch.float16


def holds_all_models(name: str = "auto", needed_bytes: int = ALL_MODELS_BYTES) -> bool:
    """Whether one device can keep the text and the image models loaded at the same time.

    Args:
        name: the device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        needed_bytes: memory all models need together.

    Returns:
        True on a CPU (host memory), or on a GPU with at least ``needed_bytes`` free.
    """
    device = resolve_device(name)
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return free >= needed_bytes


def release_memory() -> None:
    """Return the memory of models that are no longer referenced (to the card's free pool)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
