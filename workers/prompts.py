"""Prompts built from extracted attributes: one for FLUX (rendering), one for CLIP (scoring).

Both are the original pipeline's templates, word for word. FLUX's CLIP text encoder reads only
the first 77 tokens of the generation prompt, so the product type stays first.
"""

from __future__ import annotations

import re

DEFAULT_PRODUCT_TYPE = "product"
ATTRIBUTE_FIELDS = ("key_visual_features", "color_material_details", "design_aspects")
GENERATION_TEMPLATE = (
    "Professional product photography of a {product_type}, featuring {key_visual_features}, "
    "{color_material_details}, {design_aspects}, placed on a clean white background, laid flat, "
    "studio lighting, 8k, 85mm lens f/2.8, no humans, no mannequins, no zoom, no tilt, "
    "no rotation, perfectly centered"
)
# Without visual features "featuring" would have no object ("a dress, featuring, red cotton").
_FEATURING = " featuring {key_visual_features},"
CLIP_TEMPLATE = "Product image of a {product_type}"
# CLIP prompt parts this short are debris of the extraction ("", "a", "xl"), not descriptions.
MAX_DROPPED_PART_CHARS = 2
_SPACE_BEFORE_COMMA = re.compile(r"\s+,")
# ",," and ", ," (runs of any length): what empty or comma-ended fields leave behind.
_REPEATED_COMMAS = re.compile(r",(?:\s*,)+")


def _collapse(value: object) -> str:
    return " ".join(str(value or "").split())


def _product_type(attrs: dict) -> str:
    return _collapse(attrs.get("product_type")) or DEFAULT_PRODUCT_TYPE


def _field(attrs: dict, name: str) -> str:
    # A field's own trailing separator would end up in front of the template's comma.
    return _collapse(attrs.get(name)).strip(" ,;")


def clean_prompt(text: str) -> str:
    """Collapse whitespace and remove ``" ,"`` and repeated commas, as the original did.

    Args:
        text: a filled-in prompt template.

    Returns:
        The text with single spaces, no space before a comma, and no empty comma-separated slot.
    """
    text = _SPACE_BEFORE_COMMA.sub(",", _collapse(text))
    # The original replaced ",," once per pass, which leaves ",," behind for two empty fields.
    return _REPEATED_COMMAS.sub(",", text)


def generation_prompt(attrs: dict) -> str:
    """Build the FLUX prompt: :data:`GENERATION_TEMPLATE` filled in and cleaned.

    Args:
        attrs: extracted attributes (``product_type``, ``key_visual_features``,
            ``color_material_details``, ``design_aspects``); an empty ``product_type`` becomes
            ``product``, other empty fields leave no trace (nor does "featuring" without its
            features).

    Returns:
        One line of prompt text.
    """
    values = {name: _field(attrs, name) for name in ATTRIBUTE_FIELDS}
    template = GENERATION_TEMPLATE
    if not values["key_visual_features"]:
        template = template.replace(_FEATURING, "")
    return clean_prompt(template.format(product_type=_product_type(attrs), **values))


def clip_prompt(attrs: dict) -> str:
    """Build the CLIP text the image is scored against, cleaned as the original did.

    Args:
        attrs: extracted attributes; only ``product_type`` is used.

    Returns:
        ``"Product image of a {product_type}"`` (``product`` when the type is empty), without
        the comma-separated parts of two characters or fewer, whitespace collapsed.
    """
    text = CLIP_TEMPLATE.format(product_type=_product_type(attrs))
    parts = (_collapse(part) for part in text.split(","))
    return ", ".join(part for part in parts if len(part) > MAX_DROPPED_PART_CHARS)
