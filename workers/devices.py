"""Which torch device and dtype a runtime runs on."""

from __future__ import annotations

import torch


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
    """bf16 on a GPU (what FLUX, Phi-3 and CLIP are served in), fp32 on a CPU.

    Args:
        device: the device the weights live on.

    Returns:
        The dtype to load weights in.
    """
    return torch.bfloat16 if device.type == "cuda" else torch.float32
