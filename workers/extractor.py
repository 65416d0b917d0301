"""Structured attribute extraction with Phi-3 (``microsoft/Phi-3-mini-4k-instruct``).

Decoding is constrained by outlines to the JSON schema of :class:`Attributes`, so every output
parses and validates, even from a random-weight model. Every string field has a maximum length:
without one a model (a random one always) may never close a string. A prompt and its answer's
cap fit the model's context: a description too long for that is cut, with a notice.
"""

from __future__ import annotations

import dataclasses
import logging
import math
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
# Constrained JSON can spend at most 4 bytes per character (a UTF-8 character; an escape such
# as \n is 2), and a byte-level token is at least 1 byte, even when it is part of a character.
MAX_BYTES_PER_CHAR = 4
SAFETY_FACTOR = 1.25
# from_pretrained keyword arguments that are the runtime's own; the rest go to the model (and
# the file-location ones to the tokenizer too).
_OPTIONS = ("max_batch", "max_new_tokens", "static_cache")
# Generated tokens of a warm-up call: enough to run every kernel once.
WARM_UP_TOKENS = 8
# Phi-3-mini-4k's context, for a config that does not say.
DEFAULT_CONTEXT_TOKENS = 4096

logger = logging.getLogger("farm.extractor")


class Attributes(pydantic.BaseModel):
    """The four attributes extracted from one product description."""

    product_type: str = Field(max_length=60)
    key_visual_features: str = Field(max_length=200)
    color_material_details: str = Field(max_length=200)
    design_aspects: str = Field(max_length=200)


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
    """Upper bound on the tokens a schema-constrained JSON object can take, with a margin.

    Args:
        schema: a model whose fields are all strings with a ``max_length``.

    Returns:
        A ``max_new_tokens`` large enough for the grammar to always reach its end.
    """
    # Skeleton: braces, quoted keys, colons, commas, empty values and the optional spaces.
    fields = schema.model_fields
    skeleton = 2 + sum(len(name) + 6 + 4 for name in fields)
    chars = 0
    for name, field in fields.items():
        limits = [meta.max_length for meta in field.metadata if hasattr(meta, "max_length")]
        if not limits:
            raise ValueError(f"field {name!r} has no max_length")
        chars += limits[0]
    # + 1 for the end-of-sequence token that closes the grammar.
    return math.ceil(SAFETY_FACTOR * (skeleton + MAX_BYTES_PER_CHAR * chars)) + 1


class Extractor:
    """Extract :class:`Attributes` from English product descriptions, in batches.

    Not safe for concurrent calls: the outlines logits processor holds per-call state.

    Args:
        model: a causal LM such as ``Phi3ForCausalLM``.
        tokenizer: its tokenizer, with a chat template.
        device: where the model runs.
        max_batch: how many prompts go through ``generate`` at once.
        max_new_tokens: cap on generated tokens; defaults to :func:`max_json_tokens`.
        static_cache: generate with a static KV cache; on a CUDA GPU transformers then
            compiles the decoding step (the first calls pay for it: see :meth:`warm_up`).
            In float32 the same tokens come out either way (a unit test compares); in
            bfloat16 other kernels may round differently.
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
        self._generate(prompts, self.max_new_tokens if self.static_cache else WARM_UP_TOKENS)
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
            outputs += self._generate(batch, self.max_new_tokens)

        # 3. Validate every output; the grammar guarantees it, so a failure is a bug.
        attributes = [self._validate(output).model_dump() for output in outputs]
        seconds = time.perf_counter() - start
        return ExtractionResult(attributes=attributes, seconds=seconds, notices=list(notices))

    def _generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
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
                **({"cache_implementation": "static"} if self.static_cache else {}),
            )
        return [outputs] if isinstance(outputs, str) else list(outputs)

    @staticmethod
    def _validate(output: str) -> Attributes:
        try:
            return Attributes.model_validate_json(output)
        except pydantic.ValidationError as error:
            raise RuntimeError(f"constrained output is not valid Attributes: {output!r}") from error
