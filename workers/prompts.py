"""Prompts built from extracted attributes: one for FLUX (rendering), one for CLIP (scoring)."""

from __future__ import annotations

DEFAULT_PRODUCT_TYPE = "garment"
ATTRIBUTE_FIELDS = ("key_visual_features", "color_material_details", "design_aspects")


def _collapse(value: object) -> str:
    return " ".join(str(value or "").split())


def _product_type(attrs: dict) -> str:
    return _collapse(attrs.get("product_type")) or DEFAULT_PRODUCT_TYPE


def _field(attrs: dict, name: str) -> str:
    # Trailing separators would leave ", ," in the comma-joined prompt.
    return _collapse(attrs.get(name)).strip(" ,;")


def generation_prompt(attrs: dict) -> str:
    """Build the detailed FLUX prompt for a catalog photo of the product.

    Args:
        attrs: extracted attributes (``product_type``, ``key_visual_features``,
            ``color_material_details``, ``design_aspects``); missing or empty fields are skipped.

    Returns:
        One line of prompt text.
    """
    parts = [
        f"Professional studio product photo of a {_product_type(attrs)}",
        "laid flat on a pure white background",
        "centered, full garment visible",
    ]
    parts += [value for value in (_field(attrs, name) for name in ATTRIBUTE_FIELDS) if value]
    parts += ["soft even lighting", "high detail", "e-commerce catalog style"]
    return ", ".join(parts)


def clip_prompt(attrs: dict) -> str:
    """Build the short CLIP text for scoring (CLIP reads at most 77 tokens).

    Args:
        attrs: extracted attributes; only ``product_type`` is used.

    Returns:
        ``"Product image of a {product_type}"``, with ``garment`` when the type is empty.
    """
    return f"Product image of a {_product_type(attrs)}"
