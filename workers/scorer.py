"""CLIP scoring runtime: how well each rendered image matches its prompt."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import PIL.Image
import torch
from transformers import CLIPModel, CLIPProcessor

from workers.text_models import HUB_KWARGS

CLIP_MAX_TOKENS = 77
# Whatever the other models run in: see Scorer.__init__.
SCORE_DTYPE = torch.float32


@dataclass
class ScoreResult:
    """Output of one :class:`Scorer` call.

    Args:
        scores: CLIP score of image ``i`` against text ``i`` (cosine times CLIP's logit scale,
            about 100 for the real model), in input order.
        seconds: wall-clock time of the call.
    """

    scores: list[float]
    seconds: float


class Scorer:
    """Scores image/text pairs with CLIP, all pairs in one forward pass."""

    def __init__(self, model: CLIPModel, processor: CLIPProcessor, device: torch.device) -> None:
        """Wire a loaded model and its processor; the model is cast to float32 if it is not.

        Args:
            model: a CLIP model already on ``device``, in eval mode.
            processor: the model's processor (image processor and tokenizer).
            device: where the model runs.
        """
        # Scores decide regeneration and best-of-N: in bf16 a score between 16 and 32 moves in
        # steps of 0.125, which ties and flips close candidates. The original scored in fp32,
        # and CLIP ViT-L/14 is small enough that fp32 costs little.
        self.model = model.to(SCORE_DTYPE)
        self.processor = processor
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        device: torch.device,
        **kwargs: object,
    ) -> Scorer:
        """Load a CLIP model (in float32 on every device) and its processor and wrap them.

        Args:
            model_id: hub id or local folder of a CLIP model.
            device: where to run.
            **kwargs: passed to ``CLIPModel.from_pretrained``.

        Returns:
            The scorer.
        """
        device = torch.device(device)
        model = CLIPModel.from_pretrained(model_id, dtype=SCORE_DTYPE, **kwargs)
        model.to(device).eval()
        # The processor comes from the same files as the model (revision, cache folder).
        hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        processor = CLIPProcessor.from_pretrained(model_id, **hub_kwargs)
        return cls(model, processor, device)

    def check_inputs(self, images: list[PIL.Image.Image], texts: list[str]) -> None:
        """Raise ``ValueError`` unless images and texts form a valid batch of pairs.

        Args:
            images: one PIL image per pair.
            texts: one non-blank text per image.
        """
        if not images:
            raise ValueError("no images given")
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        if not all(isinstance(image, PIL.Image.Image) for image in images):
            raise ValueError("images must be PIL images")
        if not all(isinstance(text, str) and text.strip() for text in texts):
            raise ValueError("texts must be non-blank strings")

    @torch.inference_mode()
    def __call__(self, images: list[PIL.Image.Image], texts: list[str]) -> ScoreResult:
        """Score image ``i`` against text ``i`` for every ``i``.

        Args:
            images: the images.
            texts: one text per image; longer than 77 tokens is truncated, as CLIP was trained.

        Returns:
            The scores and the time taken.
        """
        start = time.perf_counter()
        # 1. Check inputs.
        self.check_inputs(images, texts)
        # 2. Preprocess every pair into one batch.
        inputs = self.processor(
            text=list(texts),
            images=[image.convert("RGB") for image in images],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=CLIP_MAX_TOKENS,
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        # 3. One forward pass; logits_per_image[i, j] scores image i against text j.
        logits = self.model(**inputs).logits_per_image
        # 4. Keep the matching pairs.
        scores = [float(score) for score in logits.diagonal().float().cpu()]
        if not all(math.isfinite(score) for score in scores):
            raise RuntimeError("CLIP returned a non-finite score")
        return ScoreResult(scores=scores, seconds=time.perf_counter() - start)
