"""Prompts for FLUX and CLIP built from extracted attributes."""

from __future__ import annotations

from workers.prompts import clip_prompt, generation_prompt

ATTRS = {
    "product_type": "midi dress",
    "key_visual_features": "round neckline, short puff sleeves",
    "color_material_details": "red cotton poplin",
    "design_aspects": "button front, tie belt",
}


def test_generation_prompt_describes_a_flat_lay_catalog_photo_with_every_attribute():
    prompt = generation_prompt(ATTRS)

    assert prompt.startswith("Professional studio product photo of a midi dress, ")
    assert "laid flat on a pure white background" in prompt
    for value in list(ATTRS.values())[1:]:
        assert value in prompt
    assert prompt.endswith("soft even lighting, high detail, e-commerce catalog style")


def test_generation_prompt_keeps_the_attribute_order():
    prompt = generation_prompt(ATTRS)

    positions = [prompt.index(value) for value in ATTRS.values()]

    assert positions == sorted(positions)


def test_generation_prompt_skips_empty_fields_and_collapses_whitespace():
    attrs = {
        "product_type": "  wool\n coat ",
        "key_visual_features": "",
        "color_material_details": "  dark \t grey\n\nwool ,",
        "design_aspects": "   ",
    }

    prompt = generation_prompt(attrs)

    assert "photo of a wool coat," in prompt
    assert "dark grey wool, soft even lighting" in prompt
    assert ", ," not in prompt
    assert "  " not in prompt
    assert "\n" not in prompt


def test_generation_prompt_falls_back_to_garment_without_a_product_type():
    assert generation_prompt({}).startswith("Professional studio product photo of a garment, ")


def test_clip_prompt_is_exactly_product_image_of_the_stripped_type():
    prompt = clip_prompt({**ATTRS, "product_type": "  midi dress \n"})

    assert prompt == "Product image of a midi dress"


def test_clip_prompt_falls_back_to_garment_when_the_type_is_empty():
    assert clip_prompt({"product_type": "   "}) == "Product image of a garment"
    assert clip_prompt({}) == "Product image of a garment"
