"""Prompts for FLUX and CLIP built from extracted attributes: the original's templates."""

from __future__ import annotations

import pytest

from workers.prompts import clip_prompt, generation_prompt

ATTRS = {
    "product_type": "midi dress",
    "key_visual_features": "round neckline, short puff sleeves",
    "color_material_details": "red cotton poplin",
    "design_aspects": "button front, tie belt",
}
STYLE = (
    "placed on a clean white background, laid flat, studio lighting, 8k, 85mm lens f/2.8, "
    "no humans, no mannequins, no zoom, no tilt, no rotation, perfectly centered"
)


def test_generation_prompt_is_the_original_template_filled_in():
    assert generation_prompt(ATTRS) == (
        "Professional product photography of a midi dress, featuring round neckline, short puff "
        "sleeves, red cotton poplin, button front, tie belt, " + STYLE
    )


def test_generation_prompt_starts_with_the_product_type_for_flux_clip_encoder():
    # FLUX's CLIP encoder reads 77 tokens only: the type must come before the details.
    assert generation_prompt(ATTRS).startswith("Professional product photography of a midi dress,")


def test_generation_prompt_keeps_the_attribute_order():
    prompt = generation_prompt(ATTRS)

    positions = [prompt.index(value) for value in ATTRS.values()]

    assert positions == sorted(positions)


def test_generation_prompt_leaves_no_trace_of_empty_fields_and_collapses_whitespace():
    attrs = {
        "product_type": "  wool\n coat ",
        "key_visual_features": "",
        "color_material_details": "  dark \t grey\n\nwool ,",
        "design_aspects": "   ",
    }

    prompt = generation_prompt(attrs)

    assert prompt == f"Professional product photography of a wool coat, dark grey wool, {STYLE}"


@pytest.mark.parametrize(
    "empty",
    ["key_visual_features", "color_material_details", "design_aspects"],
)
def test_generation_prompt_has_no_empty_comma_slot_whatever_field_is_empty(empty):
    prompt = generation_prompt({**ATTRS, empty: " , "})

    assert ",," not in prompt
    assert " ," not in prompt
    assert ", ," not in prompt
    assert "  " not in prompt


def test_generation_prompt_with_every_field_empty_is_the_bare_template():
    assert generation_prompt({}) == f"Professional product photography of a product, {STYLE}"


def test_generation_prompt_falls_back_to_product_without_a_product_type():
    prompt = generation_prompt({**ATTRS, "product_type": " \n "})

    assert prompt.startswith("Professional product photography of a product, featuring ")


def test_clip_prompt_is_exactly_product_image_of_the_stripped_type():
    prompt = clip_prompt({**ATTRS, "product_type": "  midi \n dress \n"})

    assert prompt == "Product image of a midi dress"


def test_clip_prompt_falls_back_to_product_when_the_type_is_empty():
    assert clip_prompt({"product_type": "   "}) == "Product image of a product"
    assert clip_prompt({}) == "Product image of a product"


def test_clip_prompt_drops_comma_separated_parts_of_two_characters_or_fewer():
    prompt = clip_prompt({"product_type": "shirt, xl ,  a, ,slim  fit,,"})

    assert prompt == "Product image of a shirt, slim fit"
