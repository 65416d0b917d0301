"""Device choice and the memory check behind `farm run`'s schedule."""

from __future__ import annotations

import pytest
import torch

from workers.devices import holds_all_models, release_memory, resolve_device

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
