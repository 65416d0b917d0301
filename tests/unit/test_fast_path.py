"""The renderer's fast path: what ``auto`` decides on each kind of device, and which layers fp8
quantises. The decisions are tested here with the device's answers pretended; the effect of
fp8 on a card is the ``gpu``-marked test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from diffusers import FluxTransformer2DModel

from tasks.settings import Settings
from workers import fast_path
from workers.fast_path import decide_compile, decide_fp8, decide_static_cache, fp8_layer

CUDA = torch.device("cuda")  # a device object only: nothing here touches a GPU
CPU = torch.device("cpu")


@pytest.fixture
def card(monkeypatch):
    """Pretend a CUDA card whose compute capability the test sets."""
    answers = {"capability": (9, 0)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: answers["capability"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Pretended GPU")
    monkeypatch.setitem(sys.modules, "torchao", sys.modules.get("torchao") or object())
    return answers


@pytest.fixture
def triton(monkeypatch):
    """Pretend triton is installed, or not: ``triton["installed"]``."""
    import importlib.util

    answers, real = {"installed": True}, importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "triton":
            return object() if answers["installed"] else None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return answers


def test_auto_compiles_on_a_cuda_card_and_not_on_the_cpu(triton):
    assert decide_compile(CUDA, "auto", "gpu")[0] is True
    assert decide_compile(CUDA, "auto", "model_offload")[0] is True
    on_cpu, why = decide_compile(CPU, "auto", "cpu")
    assert on_cpu is False and "no CUDA GPU" in why


def test_auto_gives_extraction_a_static_cache_on_a_cuda_card_with_triton_only(triton):
    assert decide_static_cache(CUDA, "auto") == (
        True,
        "auto: CUDA GPU, the decoding step is compiled",
    )
    assert decide_static_cache(CPU, "auto")[0] is False
    triton["installed"] = False
    static, why = decide_static_cache(CUDA, "auto")
    assert static is False and "triton" in why


@pytest.mark.parametrize(("setting", "wanted"), [("on", True), ("off", False), (True, True)])
def test_an_explicit_static_cache_switch_is_kept_on_any_device(setting, wanted):
    for device in (CPU, CUDA):
        assert decide_static_cache(device, setting)[0] is wanted


def test_the_extractor_decodes_with_a_static_cache_by_default_only_on_a_card():
    assert Settings().extract_static_cache == "auto"


def test_auto_does_not_compile_under_sequential_offload(triton):
    compiled, why = decide_compile(CUDA, "auto", "sequential_offload")
    assert compiled is False and "sequential offload" in why


def test_auto_does_not_compile_without_triton(triton):
    triton["installed"] = False
    compiled, why = decide_compile(CUDA, "auto", "gpu")
    assert compiled is False and "triton" in why


def test_a_card_too_small_even_for_float8_weights_keeps_bf16_and_its_placement(card, triton):
    placements = {True: "sequential_offload", False: "sequential_offload"}
    asked = []

    def place(fp8):
        asked.append(fp8)
        return placements[fp8]

    path, placed = fast_path.decide(CUDA, "auto", "auto", place, placement_of=str)
    assert asked == [True, False] and placed == "sequential_offload"
    assert path.fp8 is False and "too small" in path.fp8_reason
    assert path.compile is False  # layer hooks


def test_float8_weights_that_keep_the_pipeline_whole_are_chosen_with_compile(card, triton):
    placements = {True: "model_offload", False: "sequential_offload"}
    path, placed = fast_path.decide(CUDA, "auto", "auto", placements.get, placement_of=str)
    assert (path.fp8, path.compile, placed) == (True, True, "model_offload")


def test_fp8_asked_for_is_kept_whatever_the_placement(card, triton):
    path, placed = fast_path.decide(CUDA, "off", "on", lambda fp8: "sequential_offload", str)
    assert path.fp8 is True and path.compile is False


def test_on_and_off_are_taken_as_asked():
    assert decide_compile(CPU, "on", "cpu") == (True, "FARM_RENDER_COMPILE=on")
    assert decide_compile(CUDA, "off", "gpu") == (False, "FARM_RENDER_COMPILE=off")
    assert decide_fp8(CPU, "on") == (True, "FARM_RENDER_FP8=on")
    assert decide_fp8(CUDA, False) == (False, "FARM_RENDER_FP8=off")


@pytest.mark.parametrize(
    ("capability", "chosen"), [((9, 0), True), ((8, 9), True), ((8, 6), False)]
)
def test_auto_fp8_follows_the_cards_compute_capability(card, capability, chosen):
    card["capability"] = capability
    fp8, why = decide_fp8(CUDA, "auto")
    assert fp8 is chosen
    if not chosen:
        assert "8.6" in why and "Pretended GPU" in why


def test_auto_fp8_is_off_without_torchao_and_says_so(card, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao raises ImportError
    fp8, why = decide_fp8(CUDA, "auto")
    assert fp8 is False and "torchao" in why


def test_auto_fp8_is_off_on_the_cpu():
    fp8, why = decide_fp8(CPU, "auto")
    assert fp8 is False and "CUDA GPU" in why


def test_an_unknown_switch_is_refused():
    with pytest.raises(ValueError, match="auto, on, off"):
        fast_path.switch("maybe")


@pytest.mark.parametrize(
    ("value", "read"), [("1", "on"), ("true", "on"), ("0", "off"), ("no", "off"), ("auto", "auto")]
)
def test_the_settings_read_a_switch_from_the_environment(monkeypatch, value, read):
    monkeypatch.setenv("FARM_RENDER_FP8", value)
    monkeypatch.setenv("FARM_RENDER_COMPILE", value)
    settings = Settings()
    assert settings.render_fp8 == settings.render_compile == read


def test_both_switches_are_auto_by_default(monkeypatch):
    monkeypatch.delenv("FARM_RENDER_FP8", raising=False)
    monkeypatch.delenv("FARM_RENDER_COMPILE", raising=False)
    assert Settings().render_fp8 == Settings().render_compile == "auto"


@pytest.fixture(scope="module")
def transformer(tiny_profile):
    return FluxTransformer2DModel.from_pretrained(Path(tiny_profile.renderer) / "transformer")


def test_fp8_takes_the_blocks_attention_and_feed_forward_layers_only(transformer):
    linear = {n: m for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    chosen = {name for name, module in linear.items() if fp8_layer(module, name)}
    left = set(linear) - chosen

    assert "transformer_blocks.0.attn.to_q" in chosen
    assert "transformer_blocks.0.ff.net.2" in chosen
    assert "single_transformer_blocks.0.proj_mlp" in chosen
    assert {"x_embedder", "context_embedder", "proj_out", "norm_out.linear"} <= left
    assert "transformer_blocks.0.norm1.linear" in left  # AdaLN modulation
    assert all(name.startswith(fast_path.BLOCK_PREFIXES) for name in chosen)
    assert not any(".norm" in name for name in chosen)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs a CUDA device of compute capability 8.9 or newer",
)
def test_on_a_card_fp8_stores_the_chosen_layers_in_float8_and_keeps_the_output_close(
    transformer,
):
    pytest.importorskip("torchao")
    from workers.renderer import quantize_fp8

    model = transformer.to("cuda", torch.bfloat16)
    inputs = {
        "hidden_states": torch.randn(1, 16, model.config.in_channels, device="cuda",
                                     dtype=torch.bfloat16),
        "encoder_hidden_states": torch.randn(1, 8, model.config.joint_attention_dim,
                                             device="cuda", dtype=torch.bfloat16),
        "pooled_projections": torch.randn(1, model.config.pooled_projection_dim, device="cuda",
                                          dtype=torch.bfloat16),
        "timestep": torch.tensor([0.5], device="cuda"),
        "img_ids": torch.zeros(16, 3, device="cuda"),
        "txt_ids": torch.zeros(8, 3, device="cuda"),
    }  # fmt: skip
    with torch.inference_mode():
        before = model(**inputs).sample.float()
    quantize_fp8(model)
    with torch.inference_mode():
        after = model(**inputs).sample.float()
    to_q = model.transformer_blocks[0].attn.to_q.weight
    assert "float8" in str(getattr(to_q, "dtype", "")) or "Float8" in type(to_q).__name__
    assert model.proj_out.weight.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(before.flatten(), after.flatten(), dim=0) > 0.9
