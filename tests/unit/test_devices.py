"""Device choice and the memory check behind `farm run`'s schedule."""

from __future__ import annotations

import pytest
import torch

from workers.devices import default_dtype, holds_all_models, release_memory, resolve_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_cpu_keeps_every_model_loaded_at_once():
    assert resolve_device("cpu").type == "cpu"
    assert holds_all_models("cpu")


def test_asking_for_cuda_without_it_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.gpu
@needs_cuda
def test_a_card_holds_all_models_only_with_that_much_memory_free():
    free, total = torch.cuda.mem_get_info()
    assert holds_all_models("cuda", needed_bytes=free // 2)
    assert not holds_all_models("cuda", needed_bytes=total + 1)


@pytest.mark.gpu
@needs_cuda
def test_released_models_give_their_memory_back_to_the_card():
    before = torch.cuda.mem_get_info()[0]
    weights = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    assert torch.cuda.mem_get_info()[0] < before
    del weights
    release_memory()
    assert torch.cuda.mem_get_info()[0] >= before - 2**20


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((7, 0), torch.float16),  # V100
        ((7, 5), torch.float16),  # T4
        ((8, 0), torch.bfloat16),  # A100
        ((8, 9), torch.bfloat16),  # L4
        ((9, 0), torch.bfloat16),  # H100, H200
    ],
    ids=["V100", "T4", "A100", "L4", "H100"],
)
def test_a_card_gets_bf16_only_from_compute_capability_8_and_fp16_before(
    monkeypatch, capability, expected
):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # Emulated bf16 makes this say yes on old cards too; the choice must not follow it.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)

    assert default_dtype(torch.device("cuda:0")) == expected


def test_a_cpu_loads_weights_in_float32():
    assert default_dtype(torch.device("cpu")) == torch.float32
