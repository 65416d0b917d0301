"""Structured attribute extraction with Phi-3 (``microsoft/Phi-3-mini-4k-instruct``).

Decoding is constrained by outlines to the JSON schema of :class:`Attributes`, so every output
parses and validates, even from a random-weight model. Every string field is printable ASCII of
a bounded length: without a bound a model (a random one always) may never close a string, and
in ASCII one character is one byte, so the grammar's longest answer in bytes bounds its tokens
exactly (:func:`max_json_tokens`, 449 for :class:`Attributes`). A prompt and that cap fit the
model's context: a description too long for that is cut, with a notice.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass

import outlines
import pydantic
import torch
from pydantic import Field
from transformers import AutoModelForCausalLM

from workers.text_models import check_texts, load_model_and_tokenizer

# The original pipeline's wording, which its published results came from.
SYSTEM_PROMPT = (
    "You are an AI assistant that extracts structured product information from descriptions."
)
EXTRACT_INSTRUCTIONS = (
    "Extract the following elements from this product description:\n"
    "1. Product type (what exactly is it?)\n"
    "2. Key visual features (2-3 most distinctive visual elements)\n"
    "3. Color and material details\n"
    "4. Any unique design aspects"
)
RETURN_INSTRUCTIONS = (
    "Return the extracted elements in JSON format with these exact keys: product_type (simple "
    "text string), key_visual_features, color_material_details, design_aspects (simple "
    "comma-separated text strings). Do NOT include lists, arrays, or nested objects in your JSON."
)
# The answers feed an English image prompt: printable ASCII without the quote and backslash
# that JSON would escape, so each character is one byte and one token at most.
ANSWER_CHARS = r"[ !#-\[\]-~]"
# from_pretrained keyword arguments that are the runtime's own; the rest go to the model (and
# the file-location ones to the tokenizer too).
_OPTIONS = ("max_batch", "max_new_tokens", "static_cache")
# Generated tokens of a warm-up call: enough to run every kernel once.
WARM_UP_TOKENS = 8
# Phi-3-mini-4k's context, for a config that does not say.
DEFAULT_CONTEXT_TOKENS = 4096
# The static KV cache's length: a prompt of up to 575 tokens (the instructions take 140 with
# a 32k SentencePiece vocabulary of Phi-3's kind, the seed catalog's longest description 218)
# and the answer's cap. One fixed length compiles once, and a batch of 8 holds 3 GiB of
# Phi-3-mini's cache (384 KiB per token) where the whole context would take 12 GiB. A longer
# prompt is generated with the dynamic cache.
STATIC_CACHE_TOKENS = 1024

logger = logging.getLogger("farm.extractor")


def answer_field(max_chars: int):
    """A string field of at most ``max_chars`` characters of :data:`ANSWER_CHARS`.

    The limit is written into the pattern because outlines builds the grammar from the
    pattern alone when a field has one.
    """
    return Field(pattern=rf"^{ANSWER_CHARS}{{0,{max_chars}}}$")


class Attributes(pydantic.BaseModel):
    """The four attributes extracted from one product description.

    The lengths hold the answers the prompt asks for (a product type of a few words, two or
    three features, colour and material, design details) with room to spare, and keep the
    answer's token cap at 449, a ninth of Phi-3-mini's context.
    """

    product_type: str = answer_field(40)
    key_visual_features: str = answer_field(100)
    color_material_details: str = answer_field(100)
    design_aspects: str = answer_field(100)


@dataclass
class ExtractionResult:
    """Output of an :class:`Extractor` call.

    Attributes:
        attributes: ``Attributes.model_dump()`` per input, in input order.
        seconds: wall time of the call.
        notices: per input, None or why its description was cut to fit the context.
    """

    attributes: list[dict]
    seconds: float
    notices: list[str | None] = dataclasses.field(default_factory=list)


def max_json_tokens(schema: type[pydantic.BaseModel] = Attributes) -> int:
    """The most tokens a schema-constrained answer can take: the grammar's longest, in bytes.

    A token is at least one byte, and every byte of the answer is bounded: the skeleton
    (braces, quoted keys, colons, commas and the optional space the grammar allows around
    each) and each value at its length limit in one-byte characters.

    Args:
        schema: a model whose fields are all :func:`answer_field` strings.

    Returns:
        A ``max_new_tokens`` with which the grammar always reaches its end.
    """
    # Per field its quoted name, colon, quoted value and four optional spaces; braces and
    # the commas between the fields.
    fields = schema.model_fields
    skeleton = 2 + sum(len(name) + 5 + 4 for name in fields) + len(fields) - 1
    chars = 0
    for name, field in fields.items():
        pattern = next((m.pattern for m in field.metadata if getattr(m, "pattern", None)), "")
        limit = re.fullmatch(rf"\^{re.escape(ANSWER_CHARS)}\{{0,(\d+)\}}\$", pattern)
        if not limit:
            raise ValueError(f"field {name!r} is not a bounded answer field")
        chars += int(limit.group(1))
    return skeleton + chars + 1  # + the end-of-sequence token that closes the grammar


class Extractor:
    """Extract :class:`Attributes` from English product descriptions, in batches.

    Not safe for concurrent calls: the outlines logits processor holds per-call state.

    Args:
        model: a causal LM such as ``Phi3ForCausalLM``.
        tokenizer: its tokenizer, with a chat template.
        device: where the model runs.
        max_batch: how many prompts go through ``generate`` at once.
        max_new_tokens: cap on generated tokens; defaults to :func:`max_json_tokens`.
        static_cache: generate with a static KV cache of :data:`STATIC_CACHE_TOKENS`
            (or the context, if shorter); on a CUDA GPU transformers then compiles the
            decoding step (the first calls pay for it: see :meth:`warm_up`). A batch with a
            prompt too long for it runs with the dynamic cache. In float32 the same tokens
            come out either way (a unit test compares); in bfloat16 other kernels may round
            differently.
    """

    def __init__(
        self,
        model,
        tokenizer,
        device: torch.device,
        max_batch: int = 8,
        max_new_tokens: int | None = None,
        static_cache: bool = False,
    ):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device
        self.max_batch = max_batch
        self.max_new_tokens = max_new_tokens or max_json_tokens(Attributes)
        self.static_cache = static_cache
        self.context_tokens = (
            getattr(model.config, "max_position_embeddings", None) or DEFAULT_CONTEXT_TOKENS
        )
        self.static_cache_tokens = min(STATIC_CACHE_TOKENS, self.context_tokens)
        # The instructions alone must leave room for a description: checked once, here.
        if self._length(self.build_prompt(".")) >= self.prompt_budget():
            raise ValueError(
                f"an answer of {self.max_new_tokens} tokens leaves no room for a prompt in the "
                f"model's {self.context_tokens}-token context"
            )
        self._outlines_model = outlines.from_transformers(self.model, self.tokenizer)
        # Prompts come from build_prompt, already in the chat format; outlines 1.3 would wrap a
        # plain string in a second user turn when the tokenizer has a chat template.
        self._outlines_model.type_adapter.has_chat_template = False
        # Compiles the schema's index over the vocabulary once (seconds); calls reuse it.
        self._generator = outlines.Generator(self._outlines_model, Attributes)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        device: torch.device,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> Extractor:
        """Load the model and tokenizer from a hub id or a local folder.

        Args:
            model_id: e.g. ``microsoft/Phi-3-mini-4k-instruct`` or a folder.
            device: where the model runs.
            dtype: weight dtype; defaults to :func:`workers.devices.default_dtype`.
            **kwargs: the runtime's own options (see the class), else passed to the model's
                ``from_pretrained`` (the file-location ones, such as ``cache_dir`` or
                ``revision``, also to the tokenizer's).

        Returns:
            A ready extractor.
        """
        model, tokenizer, options = load_model_and_tokenizer(
            AutoModelForCausalLM, model_id, device, dtype, _OPTIONS, kwargs
        )
        extractor = cls(model, tokenizer, device, **options)
        if extractor.static_cache:
            extractor.warm_up()
        return extractor

    def warm_up(self, text: str = "A red cotton dress.") -> float:
        """Pay a first call's one-off costs (kernels; with a static cache on CUDA, compiling).

        Without a static cache a few tokens suffice. With one, a full batch of ``max_batch``
        prompts runs to ``max_new_tokens``, so the shapes a busy worker uses most are
        compiled now; a smaller batch or a longer prompt may still compile on first use.
        Errors propagate: a worker must not start half-ready.

        Args:
            text: any description.

        Returns:
            Seconds taken.
        """
        start = time.perf_counter()
        prompts = [self.build_prompt(text)] * (self.max_batch if self.static_cache else 1)
        tokens = self.max_new_tokens if self.static_cache else WARM_UP_TOKENS
        self._generate(prompts, tokens, self.static_cache)
        return time.perf_counter() - start

    def check_inputs(self, texts: list[str]) -> None:
        """Raise ``ValueError`` unless ``texts`` is a non-empty list of non-blank strings.

        Args:
            texts: the English descriptions.
        """
        check_texts(texts)

    def prompt_budget(self) -> int:
        """The tokens a prompt may take: the model's context less the answer's cap."""
        return self.context_tokens - self.max_new_tokens

    def fit_prompt(self, text: str) -> tuple[str, str | None]:
        """The chat prompt for one description, cut to the prompt budget if it must be.

        Args:
            text: an English product description.

        Returns:
            (prompt, None), or (prompt of the cut description, a notice saying so).
        """
        prompt = self.build_prompt(text)
        over = self._length(prompt) - self.prompt_budget()
        if over <= 0:
            return prompt, None
        ids = self.tokenizer(text.strip(), add_special_tokens=False).input_ids
        keep = len(ids) - over
        while keep > 0:
            cut = self.tokenizer.decode(ids[:keep], skip_special_tokens=True)
            prompt = self.build_prompt(cut)
            over = self._length(prompt) - self.prompt_budget()
            if over <= 0:
                notice = (
                    f"description cut from {len(ids)} to {keep} tokens: the prompt and a "
                    f"{self.max_new_tokens}-token answer must fit the model's "
                    f"{self.context_tokens}-token context"
                )
                return prompt, notice
            keep -= max(over, 1)  # decoding and encoding again may merge tokens otherwise
        raise ValueError("the extraction prompt leaves no room for a description")

    def _length(self, prompt: str) -> int:
        # As generation encodes it: with the special tokens the tokenizer adds (a BOS).
        return len(self.tokenizer(prompt).input_ids)

    def build_prompt(self, text: str) -> str:
        """Build the chat prompt for one description.

        Args:
            text: an English product description.

        Returns:
            The prompt in the model's chat format, ending with the assistant's turn.
        """
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": f"{EXTRACT_INSTRUCTIONS}\n\n{text.strip()}\n\n{RETURN_INSTRUCTIONS}",
            },
        ]
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    def __call__(self, texts: list[str]) -> ExtractionResult:
        """Extract the attributes of each description.

        Args:
            texts: English product descriptions.

        Returns:
            One attributes dict per input, in order, and the time taken.
        """
        self.check_inputs(texts)
        start = time.perf_counter()

        # 1. Build one chat prompt per description, each cut to fit the context if it must be.
        prompts, notices = zip(*(self.fit_prompt(text) for text in texts), strict=True)
        for notice in filter(None, notices):
            logger.warning("extraction: %s", notice)

        # 2. Generate schema-constrained JSON, max_batch prompts at a time.
        outputs: list[str] = []
        for first in range(0, len(prompts), self.max_batch):
            batch = list(prompts[first : first + self.max_batch])
            static = self._static_fits(batch)
            # A static batch always has max_batch rows: each other shape would compile again
            # (and after a few, fall back to eager); decoding a few rows more costs little.
            rows = batch + batch[-1:] * (self.max_batch - len(batch)) if static else batch
            outputs += self._generate(rows, self.max_new_tokens, static)[: len(batch)]

        # 3. Validate every output; the grammar guarantees it, so a failure is a bug.
        attributes = [self._validate(output).model_dump() for output in outputs]
        seconds = time.perf_counter() - start
        return ExtractionResult(attributes=attributes, seconds=seconds, notices=list(notices))

    def _static_fits(self, prompts: list[str]) -> bool:
        # Whether the batch runs with the static cache: on, and its longest prompt and the
        # answer's cap fit the cache's fixed length.
        if not self.static_cache:
            return False
        longest = max(self._length(prompt) for prompt in prompts)
        return longest + self.max_new_tokens <= self.static_cache_tokens

    def _generate(self, prompts: list[str], max_new_tokens: int, static: bool) -> list[str]:
        static_options = {
            "cache_implementation": "static",
            "max_cache_len": self.static_cache_tokens,
        }
        with torch.inference_mode():
            outputs = self._generator.batch(
                prompts,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                # Only the grammar's end token may stop generation: a chat model also stops at
                # <|end|>, which the grammar allows as text inside a JSON string.
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                **(static_options if static else {}),
            )
        return [outputs] if isinstance(outputs, str) else list(outputs)

    @staticmethod
    def _validate(output: str) -> Attributes:
        try:
            return Attributes.model_validate_json(output)
        except pydantic.ValidationError as error:
            raise RuntimeError(f"constrained output is not valid Attributes: {output!r}") from error
