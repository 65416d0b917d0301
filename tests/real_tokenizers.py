"""A real tokenizer file that a test-only package ships, and a Phi-3-like model built on it.

mistral-common ships ``tokenizer.model.v1``: a 32k Llama-layout SentencePiece BPE with byte
fallback, the same kind as Phi-3-mini's tokenizer (a different vocabulary). The file is only
read, found without importing the package. (CLIP's BPE merges, which open-clip-torch ships,
are read by the tiny builders themselves: ``workers.tiny_image.clip_bpe_vocabulary``.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sentencepiece as spm
from tokenizers import AddedToken
from transformers import LlamaTokenizer

from workers.tiny_text import PHI3_CHAT_TEMPLATE, write_tiny_phi3_model

INSTALL = "pip install -e '.[dev]' (mistral-common is a dev dependency)"

# Phi-3-mini-4k-instruct's added tokens, at its ids (after the 32000 SentencePiece pieces).
PHI3_ADDED_TOKENS = [
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
]
# Phi-3-mini's generation_config stops at <|endoftext|>, <|assistant|> and <|end|>.
PHI3_STOP_TOKENS = ["<|endoftext|>", "<|assistant|>", "<|end|>"]
# Phi-3-mini's embedding has more rows than its tokenizer has tokens (a multiple of 64), so
# its logits are wider than the vocabulary; the stand-in keeps that.
PHI3_VOCAB_ROWS = 32064


def package_data_file(package: str, *parts: str) -> Path:
    """Locate a data file inside an installed package without importing the package.

    ``importlib.util.find_spec`` on a top-level name only finds the folder; it does not run
    the package's ``__init__`` (``importlib.resources.files`` would).

    Args:
        package: a top-level package name, e.g. ``mistral_common``.
        *parts: the path inside the package.

    Returns:
        The file's path.

    Raises:
        FileNotFoundError: the package or the file is missing, with the install command.
    """
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder, *parts)
        if path.is_file():
            return path
    raise FileNotFoundError(f"{package}/{'/'.join(parts)} not found; install it: {INSTALL}")


def mistral_spm_model() -> Path:
    """Return mistral-common's ``tokenizer.model.v1``, a 32k Llama-layout SentencePiece BPE."""
    return package_data_file("mistral_common", "data", "tokenizer.model.v1")


def _vocab_and_merges(model: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read a SentencePiece BPE model into a ``tokenizers`` BPE vocabulary and merges.

    Read with the sentencepiece library, not transformers' converter, which needs protobuf
    (not installed here). SentencePiece BPE merges the pair whose joined piece scores highest,
    so the merges are the splits of every normal piece, best score first.
    """
    processor = spm.SentencePieceProcessor(model_file=str(model))
    vocab = {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}
    ranked = []
    for piece, index in vocab.items():
        if processor.is_control(index) or processor.is_unknown(index) or processor.is_byte(index):
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-processor.get_score(index), index, vocab[left], left, right))
    return vocab, [(left, right) for *_, left, right in sorted(ranked)]


def build_spm_phi3_tokenizer(model: Path | None = None) -> LlamaTokenizer:
    """Build a Phi-3-mini-like chat tokenizer on a real SentencePiece BPE with byte fallback.

    Args:
        model: a Llama-layout SentencePiece BPE model; defaults to :func:`mistral_spm_model`.

    Returns:
        A fast Llama tokenizer with Phi-3's added tokens at Phi-3's ids, its chat template,
        ``<|endoftext|>`` as eos and pad, left padding and no automatic bos (the template
        writes the whole prompt).
    """
    vocab, merges = _vocab_and_merges(model or mistral_spm_model())
    tokenizer = LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        add_bos_token=False,
        add_eos_token=False,
        legacy=False,
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=4096,
        chat_template=PHI3_CHAT_TEMPLATE,
    )
    # Added one by one, so each lands at its Phi-3 id (32000 + position).
    for token in PHI3_ADDED_TOKENS:
        tokenizer.add_tokens(
            [AddedToken(token, special=True, normalized=False, lstrip=False, rstrip=False)],
            special_tokens=True,
        )
    tokenizer.eos_token = "<|endoftext|>"
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def build_spm_phi3(out: Path, model: Path | None = None) -> None:
    """Write a tiny random-weight Phi-3 causal LM with the SentencePiece chat tokenizer.

    Args:
        out: an empty folder; it receives the model and the tokenizer.
        model: the SentencePiece model; defaults to :func:`mistral_spm_model`.
    """
    out = Path(out)
    tokenizer = build_spm_phi3_tokenizer(model)
    tokenizer.save_pretrained(out)
    stop_ids = tokenizer.convert_tokens_to_ids(PHI3_STOP_TOKENS)
    write_tiny_phi3_model(out, tokenizer, max(PHI3_VOCAB_ROWS, len(tokenizer)), stop_ids)
