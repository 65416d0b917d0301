"""Where a FLUX pipeline's weights live: sized from its files, decided from the free memory.

The sizes come from the safetensors headers of the pipeline folder (shapes and dtypes, no
tensors loaded), converted to the dtype the weights will be loaded in, so the decision follows
the model actually on disk rather than fixed thresholds.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from workers.fast_path import fp8_module
from workers.hub import size_text, snapshot_folder
from workers.profiles import DEFAULT_REVISION

GIB = 2**30
MEMORY_MODES = ("auto", "gpu", "encoder_offload", "model_offload", "sequential_offload")
# The component ``encoder_offload`` leaves in host memory and streams to the card block by
# block for each prompt: T5-XXL, which runs once per image, while the transformer runs four
# times (steps) and stays on the card.
STREAMED_ENCODER = "text_encoder_2"
# A weight name's repeated block (T5's ``encoder.block.7.layer...``); group offloading moves
# one block at a time and prefetches the next.
ENCODER_BLOCK = re.compile(r"\.block\.(\d+)\.")
# Card memory a render needs besides the weights at 1024x1024: the VAE decode is the peak
# (128- and 256-channel feature maps of 1024x1024 in bf16, GroupNorm upcasting to fp32, the
# mid-block attention over 128x128 latents: about 3 GiB), the transformer's activations over
# 4096 image + 256 text tokens stay under 0.5 GiB, and the caching allocator fragments some.
HEADROOM_BYTES = 4 * GIB
# What a GPU worker's process holds in host RAM apart from weights: Python, torch, the CUDA
# runtime and libraries, tokenizers.
PROCESS_HOST_BYTES = 3 * GIB
# The pipeline folders diffusers loads weights from; the rest are tokenizers and a scheduler.
WEIGHT_FILES = ("diffusion_pytorch_model", "model")
SAFETENSORS_ITEMSIZE = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
    "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
FLOAT_TYPES = {"F64", "F32", "F16", "BF16"}


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file: name → dtype, shape, offsets.

    Args:
        path: a ``.safetensors`` file.

    Returns:
        The header without its ``__metadata__`` entry.
    """
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    header.pop("__metadata__", None)
    return header


def weight_files(component: Path) -> list[Path]:
    """The safetensors files diffusers or transformers load for one component folder.

    A sharded checkpoint lists its shards in an index; otherwise the plain file is used, so
    variant files next to it (``*.fp16.safetensors``) are not counted twice.
    """
    for stem in WEIGHT_FILES:
        index = component / f"{stem}.safetensors.index.json"
        if index.is_file():
            shards = set(json.loads(index.read_text())["weight_map"].values())
            return [component / shard for shard in sorted(shards)]
        single = component / f"{stem}.safetensors"
        if single.is_file():
            return [single]
    return []


def tensor_bytes(name: str, info: dict, itemsize: int, fp8_linear: bool) -> int:
    """Bytes one tensor takes once loaded (floats at ``itemsize``, integers as stored)."""
    count = 1
    for size in info["shape"]:
        count *= size
    if info["dtype"] not in FLOAT_TYPES:
        return count * SAFETENSORS_ITEMSIZE[info["dtype"]]
    linear_weight = len(info["shape"]) == 2 and name.endswith(".weight")
    if fp8_linear and linear_weight and fp8_module(name.removesuffix(".weight")):
        # float8 weights with one float32 scale per output row (torchao's PerRow)
        return count + info["shape"][0] * 4
    return count * itemsize


def component_bytes(folder: str | Path, dtype: torch.dtype, fp8: bool = False) -> dict[str, int]:
    """The size of each pipeline component at the dtype it will be loaded in.

    Read from the safetensors headers only. Floating-point tensors count ``dtype``'s bytes per
    element, integer tensors their stored size. With ``fp8`` the 2-D weights of the linear layers
    that fp8 quantises (:func:`workers.fast_path.fp8_module`; FLUX has no embedding tables)
    count one byte per element plus a scale per row.

    Args:
        folder: a diffusers pipeline folder (with ``model_index.json``).
        dtype: the dtype the weights are loaded in.
        fp8: whether the transformer's linear layers are quantised to float8.

    Returns:
        Component name → bytes, for each component folder that holds weights.
    """
    folder = Path(folder)
    itemsize = torch.empty((), dtype=dtype).element_size()
    index = json.loads((folder / "model_index.json").read_text())
    sizes = {}
    for name in sorted(key for key in index if not key.startswith("_")):
        files = weight_files(folder / name)
        if not files:
            continue
        sizes[name] = _files_bytes(files, itemsize, fp8_linear=fp8 and name == "transformer")
    return sizes


def _files_bytes(files: list[Path], itemsize: int, fp8_linear: bool) -> int:
    # Every tensor of a component's weight files, as tensor_bytes counts it.
    return sum(
        tensor_bytes(tensor, info, itemsize, fp8_linear)
        for path in files
        for tensor, info in read_safetensors_header(path).items()
    )


def model_bytes(folder: str | Path | None, dtype: torch.dtype) -> int:
    """The size of a transformers model folder's weights at ``dtype`` (0 without safetensors).

    Args:
        folder: the model's local folder, or ``None``.
        dtype: the dtype the weights are loaded in.
    """
    if folder is None:
        return 0
    itemsize = torch.empty((), dtype=dtype).element_size()
    return _files_bytes(weight_files(Path(folder)), itemsize, fp8_linear=False)


def kv_cache_bytes(folder: str | Path | None, dtype: torch.dtype, tokens: int) -> int:
    """The KV cache a decoder model holds for ``tokens`` tokens (all rows of a batch together).

    Args:
        folder: the model's local folder (its ``config.json``), or ``None`` (then 0).
        dtype: the cache's dtype (the model's).
        tokens: batch rows × the cache's length.
    """
    if folder is None:
        return 0
    config = json.loads((Path(folder) / "config.json").read_text())
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * itemsize * tokens


def streamed_encoder_bytes(folder: str | Path, dtype: torch.dtype) -> int | None:
    """Card memory the T5 encoder takes while it streams: its parts outside the repeated
    blocks (the embedding, the final norm) and two blocks (the one running, the next).

    Args:
        folder: a diffusers pipeline folder.
        dtype: the dtype the weights are loaded in.

    Returns:
        Bytes, or ``None`` when the encoder has no repeated blocks to stream.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    blocks: dict[int, int] = {}
    rest = 0
    for path in weight_files(Path(folder) / STREAMED_ENCODER):
        for tensor, info in read_safetensors_header(path).items():
            size = tensor_bytes(tensor, info, itemsize, fp8_linear=False)
            block = ENCODER_BLOCK.search(tensor)
            if block:
                blocks[int(block.group(1))] = blocks.get(int(block.group(1)), 0) + size
            else:
                rest += size
    return rest + 2 * max(blocks.values()) if blocks else None


def local_model_folder(model_id: str, revision: str | None = None) -> Path | None:
    """The local folder of a model: the directory itself, or its snapshot in the hub cache.

    Never touches the network.

    Args:
        model_id: a local folder or a hub repo id.
        revision: the hub revision (branch, tag or commit); ``None`` for the default branch.

    Returns:
        The folder, or ``None`` when the repo is not in the cache.
    """
    if Path(model_id).is_dir():
        return Path(model_id)
    return snapshot_folder(model_id, revision or DEFAULT_REVISION)


def choose_placement(
    sizes: dict[str, int], free_bytes: int, encoder_bytes: int | None = None
) -> tuple[str, str]:
    """Pick the placement that keeps the most on the card for its free memory.

    ``gpu`` where everything fits; ``encoder_offload`` where everything but the T5 encoder
    fits beside the encoder streaming; ``model_offload`` where the largest model fits
    alone; ``sequential_offload`` otherwise.

    Args:
        sizes: component name → bytes (see :func:`component_bytes`).
        free_bytes: free memory on the card.
        encoder_bytes: the T5 encoder's card memory while it streams
            (:func:`streamed_encoder_bytes`); ``None`` rules ``encoder_offload`` out.

    Returns:
        The placement and a one-line reason.
    """
    whole, largest = sum(sizes.values()), max(sizes.values(), default=0)
    free, room = size_text(free_bytes), size_text(HEADROOM_BYTES)
    if whole + HEADROOM_BYTES <= free_bytes:
        return "gpu", f"all components ({size_text(whole)}) + {room} headroom fit in {free} free"
    resident = whole - sizes.get(STREAMED_ENCODER, 0)
    streams = encoder_bytes is not None and STREAMED_ENCODER in sizes
    if streams and resident + encoder_bytes + HEADROOM_BYTES <= free_bytes:
        return "encoder_offload", (
            f"all components ({size_text(whole)}) + {room} headroom exceed {free} free; "
            f"all but the T5 encoder ({size_text(resident)}) stay on the card and T5 "
            f"streams through {size_text(encoder_bytes)}"
        )
    biggest = max(sizes, key=sizes.get, default="none")
    if largest + HEADROOM_BYTES <= free_bytes:
        return "model_offload", (
            f"all components ({size_text(whole)}) + {room} headroom exceed {free} free; "
            f"the largest ({biggest}, {size_text(largest)}) + headroom fits"
        )
    return "sequential_offload", (
        f"even the largest component ({biggest}, {size_text(largest)}) + {room} headroom exceeds "
        f"{free} free; offloading layer by layer"
    )


def check_memory_mode(mode: str, device: torch.device) -> None:
    """Raise ``ValueError`` for an unknown mode, or a GPU mode on a device that is not CUDA."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown memory_mode {mode!r}; choose one of {', '.join(MEMORY_MODES)}")
    if device.type != "cuda" and mode != "auto":
        raise ValueError(f"memory_mode {mode!r} needs a CUDA device, not {device}")


def resolve_memory_mode(
    mode: str,
    device: torch.device,
    sizes: dict[str, int] | None = None,
    free_bytes: int | None = None,
    encoder_bytes: int | None = None,
) -> str:
    """Decide where the pipeline's weights live.

    Args:
        mode: one of :data:`MEMORY_MODES`. ``auto`` keeps a CPU pipeline on the CPU; on a GPU
            it picks with :func:`choose_placement`, keeping :data:`HEADROOM_BYTES` free.
        device: the device the renderer runs on.
        sizes: component name → bytes at the load dtype (:func:`component_bytes`); needed
            only for ``auto`` on a GPU.
        free_bytes: free memory on the card; read with ``torch.cuda.mem_get_info`` if omitted.
        encoder_bytes: see :func:`choose_placement`.

    Returns:
        ``cpu`` or one of :data:`MEMORY_MODES` but ``auto``.
    """
    return explain_memory_mode(mode, torch.device(device), sizes, free_bytes, encoder_bytes)[0]


def explain_memory_mode(
    mode: str,
    device: torch.device,
    sizes: dict[str, int] | None = None,
    free_bytes: int | None = None,
    encoder_bytes: int | None = None,
) -> tuple[str, str]:
    """:func:`resolve_memory_mode` with a one-line reason for the choice."""
    check_memory_mode(mode, device)
    if device.type != "cuda":
        return "cpu", f"{device} is not a CUDA device"
    if mode != "auto":
        return mode, "set explicitly"
    if not sizes:
        raise ValueError("memory_mode 'auto' needs the component sizes of the model")
    if free_bytes is None:
        free_bytes, _total = torch.cuda.mem_get_info(device)
    return choose_placement(sizes, free_bytes, encoder_bytes)


def explain_placement(
    folder: str | Path,
    device: torch.device,
    dtype: torch.dtype,
    fp8: bool = False,
    mode: str = "auto",
    held_bytes: int = 0,
) -> tuple[str, dict[str, int], str]:
    """Where a pipeline would be placed, from its files and the card's free memory.

    This is the renderer's own decision, for ``farm doctor``.

    Args:
        folder: the local pipeline folder.
        device: the device the renderer would run on.
        dtype: the weight dtype.
        fp8: whether the transformer's linear layers would be float8.
        mode: the memory mode setting.
        held_bytes: card memory that models loaded before the renderer will take.

    Returns:
        The placement, the component sizes, and a one-line reason.
    """
    device = torch.device(device)
    sizes = component_bytes(folder, dtype, fp8=fp8)
    encoder = streamed_encoder_bytes(folder, dtype)
    free = None
    if device.type == "cuda" and mode == "auto":
        free = torch.cuda.mem_get_info(device)[0] - held_bytes
    placement, reason = explain_memory_mode(mode, device, sizes, free, encoder)
    return placement, sizes, reason


@dataclass
class LoadPlan:
    """How the renderer loads and places a pipeline.

    Args:
        placement: ``cpu`` or one of :data:`MEMORY_MODES` but ``auto``.
        sizes: component name → bytes once loaded (empty where not needed and not local).
        on_card: load the weights straight onto the card instead of into host memory.
    """

    placement: str
    sizes: dict[str, int]
    on_card: bool


def placement_for(
    model_id: str,
    device: torch.device,
    dtype: torch.dtype,
    fp8: bool = False,
    mode: str = "auto",
    revision: str | None = None,
) -> LoadPlan:
    """The renderer's placement for a model, sized from its local files.

    Args:
        model_id: a local pipeline folder or a hub repo id (read from the cache, offline).
        device: the device the renderer runs on.
        dtype: the weight dtype.
        fp8: whether the transformer's linear layers will be float8.
        mode: the memory mode setting.
        revision: the hub revision of ``model_id``.

    Returns:
        The placement, the component sizes and whether to load straight onto the card.
    """
    device = torch.device(device)
    check_memory_mode(mode, device)
    folder = local_model_folder(model_id, revision) if device.type == "cuda" else None
    sizes = component_bytes(folder, dtype, fp8=fp8) if folder else {}
    if device.type == "cuda" and mode == "auto" and not sizes:
        raise ValueError(
            f"memory_mode 'auto' sizes {model_id} from its files, which are not on this machine; "
            "fetch the model first (farm models fetch) or choose a memory_mode"
        )
    encoder = streamed_encoder_bytes(folder, dtype) if sizes else None
    placement = resolve_memory_mode(mode, device, sizes, encoder_bytes=encoder)
    on_card = placement == "gpu" and (not fp8 or fits_before_quantising(folder, dtype, device))
    return LoadPlan(placement, sizes, on_card)


def fits_before_quantising(
    folder: Path | None, dtype: torch.dtype, device: torch.device, free_bytes: int | None = None
) -> bool:
    """Whether the card holds the whole pipeline at ``dtype``, as it loads before float8.

    float8 weights are made from the loaded ones, so loading straight onto the card needs room
    for the unquantised transformer first; where that does not fit, the pipeline loads into
    host memory, is quantised there and then moved.

    Args:
        folder: the local pipeline folder, or ``None`` (then: no).
        dtype: the load dtype.
        device: the card.
        free_bytes: its free memory; read with ``torch.cuda.mem_get_info`` if omitted.
    """
    if folder is None:
        return False
    if free_bytes is None:
        free_bytes, _total = torch.cuda.mem_get_info(device)
    return sum(component_bytes(folder, dtype).values()) + HEADROOM_BYTES <= free_bytes


def host_bytes_at_start(placement: str, sizes: dict[str, int], on_card: bool | None = None) -> int:
    """Host RAM a process needs while it loads the pipeline.

    Straight onto the card (``gpu``), safetensors files are memory-mapped (page cache the
    kernel can drop) and copied to the card tensor by tensor, so only the process itself
    counts. The CPU, the offload placements and a ``gpu`` pipeline quantised to float8 in
    host memory first hold every weight in host RAM.

    Args:
        placement: the result of :func:`resolve_memory_mode`.
        sizes: component name → bytes at the dtype they are loaded in.
        on_card: whether the weights load straight onto the card; ``placement == "gpu"`` if
            omitted.

    Returns:
        Bytes.
    """
    if placement == "gpu" if on_card is None else on_card:
        return PROCESS_HOST_BYTES
    return PROCESS_HOST_BYTES + sum(sizes.values())
