"""Prompts for FLUX and CLIP built from extracted attributes: the original's templates."""

from __future__ import annotations

import pytest

from workers.prompts import VIEWS, clip_prompt, generation_prompt, parse_views

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


# --- views ----------------------------------------------------------------------------------


def test_the_front_view_is_the_original_template_word_for_word():
    assert generation_prompt(ATTRS, "front") == generation_prompt(ATTRS)
    assert clip_prompt(ATTRS, "front") == clip_prompt(ATTRS) == "Product image of a midi dress"


def test_every_view_has_its_own_generation_and_clip_prompt():
    generation = {view: generation_prompt(ATTRS, view) for view in VIEWS}
    clip = {view: clip_prompt(ATTRS, view) for view in VIEWS}

    assert len(set(generation.values())) == len(VIEWS)
    assert len(set(clip.values())) == len(VIEWS)
    for view in VIEWS:  # the product and its details are in every view's prompt
        assert "midi dress" in generation[view] and "midi dress" in clip[view]
        assert "red cotton poplin" in generation[view]


def test_the_back_and_detail_views_say_what_they_show():
    back = generation_prompt(ATTRS, "back")
    detail = generation_prompt(ATTRS, "detail")

    assert back.startswith(
        "Professional product photography of the back of a midi dress, seen from behind, "
        "featuring round neckline"
    )
    assert detail.startswith("Close-up detail shot of the fabric and finish of a midi dress, ")
    assert "no zoom" not in detail  # a close-up is nothing but zoom
    assert clip_prompt(ATTRS, "back") == "Product image of the back of a midi dress"
    assert clip_prompt(ATTRS, "detail") == "Close-up image of the fabric of a midi dress"


@pytest.mark.parametrize("view", VIEWS)
def test_a_view_without_visual_features_leaves_no_empty_featuring(view):
    prompt = generation_prompt({**ATTRS, "key_visual_features": ""}, view)

    assert "featuring" not in prompt
    assert ",," not in prompt and " ," not in prompt and "  " not in prompt


def test_an_unknown_view_is_refused_by_both_prompts():
    with pytest.raises(ValueError, match="unknown view 'top'; choose from front, back"):
        generation_prompt(ATTRS, "top")
    with pytest.raises(ValueError, match="unknown view 'top'"):
        clip_prompt(ATTRS, "top")


@pytest.mark.parametrize(
    ("text", "views"),
    [
        ("front", ("front",)),
        ("front,back,detail", ("front", "back", "detail")),
        (" Detail , FRONT,detail,, ", ("detail", "front")),  # order kept, repeats dropped
        ("back", ("back",)),  # the front is not forced on a catalog
    ],
)
def test_parse_views_keeps_the_order_given_without_repeats(text, views):
    assert parse_views(text) == views


def test_parse_views_names_every_bad_view_and_the_allowed_ones():
    with pytest.raises(ValueError) as error:
        parse_views("front,top,bottom")

    assert str(error.value) == (
        "unknown view 'top', 'bottom'; choose from front, back, side, detail"
    )


@pytest.mark.parametrize("text", ["", " , ,"])
def test_parse_views_wants_at_least_one_view(text):
    with pytest.raises(ValueError, match="name at least one view"):
        parse_views(text)
