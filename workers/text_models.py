"""What the two text runtimes (translator, extractor) share: loading and input checks."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

from workers.devices import default_dtype

# File-location options that the tokenizer needs as much as the model does.
HUB_KWARGS = ("cache_dir", "revision", "local_files_only", "token", "subfolder")


def load_model_and_tokenizer(
    model_class,
    model_id: str,
    device: torch.device,
    dtype: torch.dtype | None,
    runtime_options: tuple[str, ...],
    kwargs: dict,
):
    """Load a transformers model and its tokenizer, splitting the runtime's own options off.

    Args:
        model_class: e.g. ``AutoModelForSeq2SeqLM``.
        model_id: a hub id or a local folder.
        device: where the model will run (decides the default dtype).
        dtype: weight dtype; :func:`workers.devices.default_dtype` when None.
        runtime_options: keyword names that belong to the runtime, not to ``from_pretrained``.
        kwargs: everything the caller's ``from_pretrained`` got; the rest goes to the model.

    Returns:
        ``(model, tokenizer, options)`` with ``options`` the runtime's own keywords.
    """
    kwargs = dict(kwargs)
    options = {key: kwargs.pop(key) for key in runtime_options if key in kwargs}
    hub_kwargs = {key: value for key, value in kwargs.items() if key in HUB_KWARGS}
    tokenizer = AutoTokenizer.from_pretrained(model_id, **hub_kwargs)
    model = model_class.from_pretrained(model_id, dtype=dtype or default_dtype(device), **kwargs)
    return model, tokenizer, options


def check_texts(texts: list[str]) -> None:
    """Raise ``ValueError`` unless ``texts`` is a non-empty list of non-blank strings.

    Args:
        texts: the inputs of one call.
    """
    if not isinstance(texts, list) or not texts:
        raise ValueError("texts must be a non-empty list")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{index}] is not a str")
        if not text.strip():
            raise ValueError(f"texts[{index}] is empty")
