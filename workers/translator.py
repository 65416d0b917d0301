"""German to English translation runtime (MarianMT, e.g. ``Helsinki-NLP/opus-mt-de-en``).

transformers 5.x has no ``translation`` pipeline, so the runtime calls the tokenizer,
``generate`` and ``batch_decode`` itself. Every line of every input text goes through the
model in one stream of batches, which is also the fast path on a GPU.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch
from transformers import AutoModelForSeq2SeqLM

from workers.text_models import check_texts, load_model_and_tokenizer

# Marian models are trained on sentence-sized inputs and accept at most 512 tokens.
MAX_INPUT_TOKENS = 512
MAX_LINE_CHARS = 400
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
# from_pretrained keyword arguments that concern where files come from, so the tokenizer gets
# them too; the rest are for the model only.
_OPTIONS = ("max_batch_lines", "max_new_tokens")


@dataclass
class TranslationResult:
    """Output of a :class:`Translator` call.

    Attributes:
        texts: one English text per input, with the input's lines kept (joined by ``"\\n"``).
        seconds: wall time of the call.
    """

    texts: list[str]
    seconds: float


def split_line(line: str, max_chars: int = MAX_LINE_CHARS) -> list[str]:
    """Split a long line at sentence ends into pieces of at most ``max_chars`` characters.

    Args:
        line: one stripped, non-empty line.
        max_chars: longest piece wanted; a single longer sentence stays whole.

    Returns:
        The pieces, in order; ``[line]`` when the line is short enough.
    """
    if len(line) <= max_chars:
        return [line]
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(line):
        if pieces and len(pieces[-1]) + 1 + len(sentence) <= max_chars:
            pieces[-1] = f"{pieces[-1]} {sentence}"
        else:
            pieces.append(sentence)
    return pieces


class Translator:
    """Translate German product texts to English, line by line, in batches.

    Args:
        model: a seq2seq model such as ``MarianMTModel``.
        tokenizer: its tokenizer (``MarianTokenizer``).
        device: where the model runs.
        max_batch_lines: how many lines go through ``generate`` at once.
        max_new_tokens: the longest translation of one line, in tokens, in place of the
            model's ``max_length`` (512 for opus-mt, also where Marian's positions end);
            ``None`` keeps the model's bound.

    Decoding follows the model's ``generation_config`` (for opus-mt-de-en: 4 beams, the pad
    id banned, at most 512 tokens), as the original pipeline did.
    """

    def __init__(
        self,
        model,
        tokenizer,
        device: torch.device,
        max_batch_lines: int = 32,
        max_new_tokens: int | None = None,
    ):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.max_batch_lines = max_batch_lines
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        device: torch.device,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> Translator:
        """Load the model and tokenizer from a hub id or a local folder.

        Args:
            model_id: e.g. ``Helsinki-NLP/opus-mt-de-en`` or a folder.
            device: where the model runs.
            dtype: weight dtype; defaults to :func:`workers.devices.default_dtype`.
            **kwargs: the runtime's own options (see the class), else passed to the model's
                ``from_pretrained`` (the file-location ones, such as ``cache_dir`` or
                ``revision``, also to the tokenizer's).

        Returns:
            A ready translator.
        """
        model, tokenizer, options = load_model_and_tokenizer(
            AutoModelForSeq2SeqLM, model_id, device, dtype, _OPTIONS, kwargs
        )
        return cls(model, tokenizer, device, **options)

    def check_inputs(self, texts: list[str]) -> None:
        """Raise ``ValueError`` unless ``texts`` is a non-empty list of non-blank strings.

        Args:
            texts: the German texts.
        """
        check_texts(texts)

    def __call__(self, texts: list[str]) -> TranslationResult:
        """Translate each text, keeping its line structure.

        Args:
            texts: German texts; blank lines are dropped.

        Returns:
            One English text per input, in order, and the time taken.
        """
        self.check_inputs(texts)
        start = time.perf_counter()

        # 1. Split each text into non-empty lines, and very long lines into sentence pieces.
        #    Each piece remembers its (text, line) so the translation can be put back together.
        keys: list[tuple[int, int]] = []
        pieces: list[str] = []
        for text_index, text in enumerate(texts):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            for line_index, line in enumerate(lines):
                for piece in split_line(line):
                    keys.append((text_index, line_index))
                    pieces.append(piece)

        # 2. Translate all pieces of all texts in batches of max_batch_lines.
        translated = self._translate(pieces)

        # 3. Rejoin: pieces of a line with a space, lines of a text with "\n".
        lines_out: list[dict[int, list[str]]] = [{} for _ in texts]
        for (text_index, line_index), english in zip(keys, translated, strict=True):
            lines_out[text_index].setdefault(line_index, []).append(english)
        joined = [
            "\n".join(" ".join(parts) for _, parts in sorted(by_line.items()))
            for by_line in lines_out
        ]
        return TranslationResult(texts=joined, seconds=time.perf_counter() - start)

    def _translate(self, pieces: list[str]) -> list[str]:
        # Batches of similar length waste less compute on padding; results go back in order.
        order = sorted(range(len(pieces)), key=lambda index: len(pieces[index]))
        results = [""] * len(pieces)
        for start in range(0, len(order), self.max_batch_lines):
            batch = order[start : start + self.max_batch_lines]
            for index, english in zip(
                batch, self._generate([pieces[i] for i in batch]), strict=True
            ):
                results[index] = english
        return results

    def _generate(self, batch: list[str]) -> list[str]:
        inputs = self.tokenizer(
            batch,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=MAX_INPUT_TOKENS,
        ).to(self.device)
        # No decoding overrides: the model's generation_config (for opus-mt, beam search with
        # the pad id banned) is how its translations are meant to be decoded.
        bound = {}
        if self.max_new_tokens is not None:
            # The caller's bound replaces max_length instead of competing with it (transformers
            # warns on every call when both are set).
            bound = {"max_new_tokens": self.max_new_tokens, "max_length": None}
        with torch.inference_mode():
            output = self.model.generate(**inputs, **bound)
        decoded = self.tokenizer.batch_decode(output, skip_special_tokens=True)
        # A line must stay one line, whatever the model emits.
        return [" ".join(english.split()) for english in decoded]
