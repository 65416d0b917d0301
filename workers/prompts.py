"""Prompts built from extracted attributes: one for FLUX (rendering), one for CLIP (scoring).

Each view of an article (front, back, side, detail) has its own pair of templates. The front
view's are the original pipeline's templates, word for word. FLUX's CLIP text encoder reads
only the first 77 tokens of the generation prompt, so the product type stays near the start.
"""

from __future__ import annotations

import re

DEFAULT_PRODUCT_TYPE = "product"
ATTRIBUTE_FIELDS = ("key_visual_features", "color_material_details", "design_aspects")
FRONT = "front"
# The views a catalog row may be rendered in, in the order a contact sheet shows them.
VIEWS = (FRONT, "back", "side", "detail")
GENERATION_TEMPLATE = (
    "Professional product photography of a {product_type}, featuring {key_visual_features}, "
    "{color_material_details}, {design_aspects}, placed on a clean white background, laid flat, "
    "studio lighting, 8k, 85mm lens f/2.8, no humans, no mannequins, no zoom, no tilt, "
    "no rotation, perfectly centered"
)
_DETAILS = "featuring {key_visual_features}, {color_material_details}, {design_aspects}"
# A side view is not laid flat nor unrotated, and a detail shot is nothing but zoom: each view
# keeps only the parts of the front's style that do not contradict it.
GENERATION_TEMPLATES = {
    FRONT: GENERATION_TEMPLATE,
    "back": (
        "Professional product photography of the back of a {product_type}, seen from behind, "
        f"{_DETAILS}, placed on a clean white background, laid flat, studio lighting, 8k, "
        "85mm lens f/2.8, no humans, no mannequins, no zoom, no tilt, no rotation, "
        "perfectly centered"
    ),
    "side": (
        "Professional product photography of the side of a {product_type}, seen in profile, "
        f"{_DETAILS}, placed on a clean white background, studio lighting, 8k, "
        "85mm lens f/2.8, no humans, no mannequins, no zoom, no tilt, perfectly centered"
    ),
    "detail": (
        "Close-up detail shot of the fabric and finish of a {product_type}, "
        f"{_DETAILS}, macro lens, sharp focus on texture and stitching, soft studio lighting, "
        "8k, no humans, no mannequins"
    ),
}
# Without visual features "featuring" would have no object ("a dress, featuring, red cotton").
_FEATURING = " featuring {key_visual_features},"
CLIP_TEMPLATE = "Product image of a {product_type}"
CLIP_TEMPLATES = {
    FRONT: CLIP_TEMPLATE,
    "back": "Product image of the back of a {product_type}",
    "side": "Product image of the side of a {product_type}",
    "detail": "Close-up image of the fabric of a {product_type}",
}
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


def parse_views(text: str) -> tuple[str, ...]:
    """The views named in a comma-separated list, such as ``--views front,back,detail``.

    Args:
        text: view names separated by commas; case and spaces around names do not matter.

    Returns:
        The views in the order given, each once.

    Raises:
        ValueError: a name that is not one of :data:`VIEWS` (the message names it and the
            allowed ones), or no view at all.
    """
    names = [name.strip().lower() for name in text.split(",")]
    names = [name for name in names if name]
    unknown = [name for name in names if name not in VIEWS]
    if unknown:
        raise ValueError(
            f"unknown view {', '.join(map(repr, unknown))}; choose from {', '.join(VIEWS)}"
        )
    if not names:
        raise ValueError(f"name at least one view; choose from {', '.join(VIEWS)}")
    return tuple(dict.fromkeys(names))


def _template(templates: dict[str, str], view: str) -> str:
    if view not in templates:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    return templates[view]


def generation_prompt(attrs: dict, view: str = FRONT) -> str:
    """Build the FLUX prompt: the view's template filled in and cleaned.

    Args:
        attrs: extracted attributes (``product_type``, ``key_visual_features``,
            ``color_material_details``, ``design_aspects``); an empty ``product_type`` becomes
            ``product``, other empty fields leave no trace (nor does "featuring" without its
            features).
        view: one of :data:`VIEWS`; ``front`` is :data:`GENERATION_TEMPLATE`.

    Returns:
        One line of prompt text.

    Raises:
        ValueError: an unknown view.
    """
    values = {name: _field(attrs, name) for name in ATTRIBUTE_FIELDS}
    template = _template(GENERATION_TEMPLATES, view)
    if not values["key_visual_features"]:
        template = template.replace(_FEATURING, "")
    return clean_prompt(template.format(product_type=_product_type(attrs), **values))


def clip_prompt(attrs: dict, view: str = FRONT) -> str:
    """Build the CLIP text the image is scored against, cleaned as the original did.

    Args:
        attrs: extracted attributes; only ``product_type`` is used.
        view: one of :data:`VIEWS`; each scores the picture against its own text.

    Returns:
        For the front, ``"Product image of a {product_type}"`` (``product`` when the type is
        empty), without the comma-separated parts of two characters or fewer, whitespace
        collapsed; the other views name their side of the product the same way.

    Raises:
        ValueError: an unknown view.
    """
    text = _template(CLIP_TEMPLATES, view).format(product_type=_product_type(attrs))
    parts = (_collapse(part) for part in text.split(","))
    return ", ".join(part for part in parts if len(part) > MAX_DROPPED_PART_CHARS)
