"""Where the renderer puts FLUX: component sizes from safetensors headers, and the decision."""

import json
import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # read when the Hugging Face libraries are first imported

from diffusers import FluxPipeline  # noqa: E402

from workers import tiny_image  # noqa: E402
from workers.placement import (  # noqa: E402
    GIB,
    HEADROOM_BYTES,
    PROCESS_HOST_BYTES,
    component_bytes,
    explain_memory_mode,
    explain_placement,
    fits_before_quantising,
    host_bytes_at_start,
    kv_cache_bytes,
    local_model_folder,
    model_bytes,
    placement_for,
    resolve_memory_mode,
    streamed_encoder_bytes,
)

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # a device object only: nothing here touches a GPU

# Parameter counts of black-forest-labs/FLUX.1-schnell's components, as their model classes
# report them (num_parameters()): the FLUX transformer 11.9 B, the T5-XXL v1.1 encoder
# (text_encoder_2) 4.76 B, CLIP ViT-L/14's text model (text_encoder) 123 M, the VAE 84 M.
FLUX_SCHNELL_PARAMETERS = {
    "transformer": 11_901_408_320,
    "text_encoder_2": 4_762_310_656,
    "text_encoder": 123_060_480,
    "vae": 83_819_683,
}
BF16 = {name: count * 2 for name, count in FLUX_SCHNELL_PARAMETERS.items()}
# With fp8 nearly all of the transformer is linear weights at one byte each.
FP8 = BF16 | {"transformer": FLUX_SCHNELL_PARAMETERS["transformer"]}
CARD_24_GB = int(23.5 * GIB)  # what a 24 GB card reports free with its CUDA context up
# T5-XXL's card memory while it streams in bf16: its embedding (32,128 x 4,096) and two of
# its 24 equal blocks.
T5_EMBEDDING = 32_128 * 4_096
T5_BLOCK = (FLUX_SCHNELL_PARAMETERS["text_encoder_2"] - T5_EMBEDDING) // 24
T5_STREAMING = (T5_EMBEDDING + 2 * T5_BLOCK) * 2


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-flux")
    tiny_image.build_tiny_flux(folder)
    return folder


def test_flux_schnell_in_bf16_goes_layer_by_layer_on_a_24_gb_card():
    # The bf16 transformer alone (22.2 GiB) plus activations does not fit: model_offload
    # would run out of memory on every render.
    assert resolve_memory_mode("auto", CUDA, BF16, free_bytes=CARD_24_GB) == "sequential_offload"


def test_flux_schnell_with_fp8_keeps_all_but_t5_on_a_24_gb_card():
    placed = resolve_memory_mode("auto", CUDA, FP8, CARD_24_GB, encoder_bytes=T5_STREAMING)
    assert placed == "encoder_offload"


def test_without_a_streamable_encoder_fp8_offloads_whole_models_on_a_24_gb_card():
    assert resolve_memory_mode("auto", CUDA, FP8, free_bytes=CARD_24_GB) == "model_offload"


def test_streaming_t5_keeps_the_bf16_transformer_on_a_32_gb_card():
    card_32_gb = int(31.3 * GIB)
    assert resolve_memory_mode("auto", CUDA, BF16, card_32_gb) == "model_offload"
    assert resolve_memory_mode("auto", CUDA, BF16, card_32_gb, T5_STREAMING) == ("encoder_offload")


def test_encoder_offload_is_chosen_only_where_the_rest_and_the_stream_fit():
    rest = sum(FP8.values()) - FP8["text_encoder_2"]
    edge = rest + T5_STREAMING + HEADROOM_BYTES
    assert resolve_memory_mode("auto", CUDA, FP8, edge, T5_STREAMING) == "encoder_offload"
    assert resolve_memory_mode("auto", CUDA, FP8, edge - 1, T5_STREAMING) != ("encoder_offload")


def test_the_streamed_encoder_is_sized_as_its_unblocked_parts_and_two_blocks(tiny_flux):
    encoder = FluxPipeline.from_pretrained(tiny_flux).text_encoder_2
    blocks = [loaded_bytes(block) for block in encoder.encoder.block]
    rest = loaded_bytes(encoder) - sum(blocks)
    # The tied embedding is stored once and counted once either way.
    assert streamed_encoder_bytes(tiny_flux, torch.float32) == rest + 2 * max(blocks)
    assert len(blocks) >= 2


@pytest.mark.parametrize("sizes", [BF16, FP8])
def test_flux_schnell_stays_on_an_80_gb_card(sizes):
    assert resolve_memory_mode("auto", CUDA, sizes, free_bytes=80 * GIB) == "gpu"


def test_the_headroom_decides_at_the_edge():
    whole = sum(BF16.values())
    assert resolve_memory_mode("auto", CUDA, BF16, whole + HEADROOM_BYTES) == "gpu"
    assert resolve_memory_mode("auto", CUDA, BF16, whole + HEADROOM_BYTES - 1) == "model_offload"


@pytest.mark.parametrize("mode", ["gpu", "encoder_offload", "model_offload", "sequential_offload"])
def test_an_explicit_memory_mode_is_kept_on_a_gpu(mode):
    assert resolve_memory_mode(mode, CUDA, free_bytes=0) == mode


def test_auto_memory_mode_stays_on_the_cpu():
    assert resolve_memory_mode("auto", CPU) == "cpu"


@pytest.mark.parametrize("mode", ["gpu", "model_offload", "sequential_offload", "bogus"])
def test_gpu_memory_modes_and_unknown_modes_are_rejected_on_the_cpu(mode):
    with pytest.raises(ValueError, match="memory_mode"):
        resolve_memory_mode(mode, CPU)


def test_auto_on_a_gpu_without_sizes_is_refused():
    with pytest.raises(ValueError, match="component sizes"):
        resolve_memory_mode("auto", CUDA, {}, free_bytes=80 * GIB)


def loaded_bytes(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_component_sizes_from_the_headers_match_the_loaded_modules(tiny_flux, dtype):
    pipeline = FluxPipeline.from_pretrained(tiny_flux, dtype=dtype)
    sizes = component_bytes(tiny_flux, dtype)
    assert set(sizes) == {"transformer", "text_encoder", "text_encoder_2", "vae"}
    for name, size in sizes.items():
        # CLIP's position ids (77 int64) are a buffer built at construction, not stored.
        assert 0 <= loaded_bytes(getattr(pipeline, name)) - size <= 77 * 8, name


def test_fp8_counts_the_weights_of_the_layers_it_quantises_at_one_byte(tiny_flux):
    from workers.fast_path import fp8_layer

    bf16 = component_bytes(tiny_flux, torch.bfloat16)
    fp8 = component_bytes(tiny_flux, torch.bfloat16, fp8=True)
    transformer = FluxPipeline.from_pretrained(tiny_flux).transformer
    chosen = [m for n, m in transformer.named_modules() if fp8_layer(m, n)]
    # bf16 → one byte per weight and a float32 scale per output row; biases stay as they are
    saved = sum(m.weight.numel() * 2 - (m.weight.numel() + m.out_features * 4) for m in chosen)
    assert chosen and bf16["transformer"] - fp8["transformer"] == saved
    assert {k: v for k, v in fp8.items() if k != "transformer"} == {
        k: v for k, v in bf16.items() if k != "transformer"
    }


def test_a_sharded_component_is_sized_from_its_index_and_variants_are_not_counted(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "model_index.json").write_text(json.dumps({"transformer": ["diffusers", "X"]}))
    part = tmp_path / "transformer"
    part.mkdir()
    save_file({"a.weight": torch.zeros(4, 8)}, part / "diffusion_pytorch_model-1.safetensors")
    save_file({"b.weight": torch.zeros(2, 8)}, part / "diffusion_pytorch_model-2.safetensors")
    save_file({"a.weight": torch.zeros(99)}, part / "diffusion_pytorch_model.fp16.safetensors")
    index = {"weight_map": {"a.weight": "diffusion_pytorch_model-1.safetensors",
                            "b.weight": "diffusion_pytorch_model-2.safetensors"}}  # fmt: skip
    (part / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    assert component_bytes(tmp_path, torch.bfloat16) == {"transformer": (32 + 16) * 2}


def test_the_doctor_gets_placement_sizes_and_a_reason(tiny_flux):
    placement, sizes, reason = explain_placement(tiny_flux, CPU, torch.float32)
    assert placement == "cpu"
    assert sizes == component_bytes(tiny_flux, torch.float32)
    assert "not a CUDA device" in reason


def test_the_reason_names_the_largest_component_when_offloading(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (CARD_24_GB, 24 * GIB))
    placement, reason = explain_memory_mode("auto", CUDA, BF16)
    assert placement == "sequential_offload"
    assert "transformer" in reason and "22.2 GiB" in reason


def test_host_memory_at_start_up_holds_the_weights_only_when_offloading():
    assert host_bytes_at_start("gpu", BF16) == PROCESS_HOST_BYTES
    for placement in ("cpu", "encoder_offload", "model_offload", "sequential_offload"):
        assert host_bytes_at_start(placement, BF16) == PROCESS_HOST_BYTES + sum(BF16.values())


def hub_snapshot(cache, repo_id, commit, source):
    """Copy a pipeline folder into a hub-shaped cache as ``repo_id`` at ``commit``."""
    import shutil

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def test_a_hub_model_is_sized_from_its_cached_snapshot_without_the_network(
    tiny_flux, tmp_path, monkeypatch
):
    import huggingface_hub.constants

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    snapshot = hub_snapshot(tmp_path, "black-forest-labs/FLUX.1-schnell", commit, tiny_flux)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert local_model_folder("black-forest-labs/FLUX.1-schnell") == snapshot
    assert local_model_folder("black-forest-labs/FLUX.1-schnell", revision=commit) == snapshot
    assert local_model_folder("black-forest-labs/FLUX.1-dev") is None
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (80 * GIB, 80 * GIB))
    plan = placement_for("black-forest-labs/FLUX.1-schnell", CUDA, torch.bfloat16)
    assert plan.placement == "gpu" and plan.on_card
    assert plan.sizes == component_bytes(tiny_flux, torch.bfloat16)


def test_auto_on_a_gpu_refuses_a_model_that_is_not_on_this_machine(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="not on this machine"):
        placement_for("black-forest-labs/FLUX.1-schnell", CUDA, torch.bfloat16)


def test_fp8_loads_straight_onto_the_card_only_where_the_unquantised_pipeline_fits(tiny_flux):
    whole = sum(component_bytes(tiny_flux, torch.bfloat16).values()) + HEADROOM_BYTES
    assert fits_before_quantising(tiny_flux, torch.bfloat16, CUDA, free_bytes=whole)
    assert not fits_before_quantising(tiny_flux, torch.bfloat16, CUDA, free_bytes=whole - 1)
    assert not fits_before_quantising(None, torch.bfloat16, CUDA, free_bytes=80 * GIB)


def test_host_memory_at_start_up_holds_the_weights_when_loaded_there_before_the_card():
    assert host_bytes_at_start("gpu", BF16, on_card=False) == PROCESS_HOST_BYTES + sum(
        BF16.values()
    )


def test_memory_the_text_models_hold_on_the_card_is_not_free_for_the_renderer(
    tiny_flux, monkeypatch
):
    whole = sum(component_bytes(tiny_flux, torch.bfloat16).values()) + HEADROOM_BYTES
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (whole, 80 * GIB))

    assert explain_placement(tiny_flux, CUDA, torch.bfloat16)[0] == "gpu"
    assert explain_placement(tiny_flux, CUDA, torch.bfloat16, held_bytes=1)[0] != "gpu"


def test_a_text_model_is_sized_from_its_safetensors_at_the_load_dtype(tmp_path):
    from transformers import AutoModelForCausalLM

    from workers.tiny_text import build_tiny_phi3

    build_tiny_phi3(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert model_bytes(tmp_path, torch.bfloat16) == weights  # buffers (rotary) are not stored
    assert model_bytes(None, torch.bfloat16) == 0


def test_phi3_minis_kv_cache_is_384_kib_a_token_in_bf16(tmp_path):
    config = {"num_hidden_layers": 32, "num_attention_heads": 32, "hidden_size": 3072}
    (tmp_path / "config.json").write_text(json.dumps(config | {"num_key_value_heads": 32}))
    assert kv_cache_bytes(tmp_path, torch.bfloat16, 1) == 384 * 1024
    assert kv_cache_bytes(tmp_path, torch.bfloat16, 8 * 1024) == 3 * GIB
    assert kv_cache_bytes(None, torch.bfloat16, 1024) == 0
