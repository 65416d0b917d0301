"""Extractor runtime on tiny random-weight Phi-3 models: constrained JSON must always validate.

Most tests run on a real 32k Llama-layout SentencePiece BPE with byte fallback (mistral-common's,
standing in for Phi-3-mini's; tests/real_tokenizers.py), so the grammar is compiled over a
vocabulary like the real model's; a few run on the tiny profile's byte-level BPE model.
"""

from __future__ import annotations

import json
import re

import huggingface_hub.constants
import pydantic
import pytest
import sentencepiece as spm
import torch
from outlines_core.json_schema import build_regex_from_schema

from tests.real_tokenizers import (
    PHI3_ADDED_TOKENS,
    PHI3_VOCAB_ROWS,
    build_spm_phi3,
    mistral_spm_model,
)
from workers.extractor import (
    STATIC_CACHE_TOKENS,
    Attributes,
    ExtractionResult,
    Extractor,
    max_json_tokens,
)
from workers.tiny_text import build_tiny_phi3

DESCRIPTIONS = [
    "A red cotton dress with a round neckline and short sleeves.",
    "Slim-fit blue jeans with five pockets and brass buttons.",
    "Black leather boots with a 5 cm block heel and a side zip.",
    "A knee-length, double-breasted coat made of grey virgin wool.",
    "A flowing viscose blouse with a floral print in red, white and green.",
    "Cardigan with a V-neck, ribbed cuffs and mother-of-pearl buttons; colour: beige.",
    "White sneakers with a rubber sole, laces and a suede upper.",
    "A cashmere scarf (180 x 30 cm) with fringes at both ends.",
    "Pleated midi skirt in navy with an elastic waistband.",
    "Quilted jacket, water-repellent, lined with down, olive green.",
    "Hoodie with a kangaroo pocket and logo embroidery®, 100% organic cotton.",
    "Oxford shirt with a button-down collar and a chest pocket — size M.",
]
# Umlauts, €, emoji, newlines and characters the 32k vocabulary lacks (👗, 🧥, ẞ: byte fallback).
MULTILINGUAL = [
    "Damenkleid aus Baumwolle, kurze Ärmel, Größe M – 29,99 €.",
    "A red cotton dress 👗 with a round neckline.\nMachine wash at 30 °C.",
    "Wintermantel 🧥 aus Schurwolle\n\nFutter: 100 % Viskose; Knöpfe aus Horn ✓",
    "GROẞE GRÖßE: Strickjacke in Beige mit Perlmuttknöpfen, übergroß geschnitten 😀",
]
FIELDS = ["product_type", "key_visual_features", "color_material_details", "design_aspects"]


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def phi3_dir(tmp_path_factory, offline):
    """The tiny profile's Phi-3: a byte-level BPE trained here (600 tokens)."""
    folder = tmp_path_factory.mktemp("phi3")
    build_tiny_phi3(folder)
    return folder


@pytest.fixture(scope="module")
def spm_phi3_dir(tmp_path_factory, offline):
    """A Phi-3 with a real 32k SentencePiece BPE with byte fallback, like Phi-3-mini's."""
    folder = tmp_path_factory.mktemp("spm_phi3")
    build_spm_phi3(folder)
    return folder


@pytest.fixture(scope="module")
def extractor(spm_phi3_dir):
    # Compiles the schema's index over the 32k vocabulary once for the module (seconds).
    return Extractor.from_pretrained(str(spm_phi3_dir), torch.device("cpu"), max_batch=4)


@pytest.fixture(scope="module")
def sentencepiece():
    return spm.SentencePieceProcessor(model_file=str(mistral_spm_model()))


@pytest.fixture(scope="module")
def all_results(extractor):
    return extractor(DESCRIPTIONS)


def test_tiny_phi3_build_is_reproducible(phi3_dir, tmp_path):
    build_tiny_phi3(tmp_path)
    for name in ("tokenizer.json", "model.safetensors"):
        assert (tmp_path / name).read_bytes() == (phi3_dir / name).read_bytes(), name


def test_the_phi3_tokenizer_is_set_up_for_batched_chat(extractor):
    tokenizer = extractor.tokenizer
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]
    for token in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
        assert len(tokenizer(token).input_ids) == 1, token


def test_the_spm_phi3_has_phi3s_chat_tokens_stop_tokens_and_wider_logits(extractor):
    tokenizer, model = extractor.tokenizer, extractor.model
    ids = tokenizer.convert_tokens_to_ids(PHI3_ADDED_TOKENS)

    assert ids == list(range(32000, 32000 + len(PHI3_ADDED_TOKENS)))
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == 32000
    assert model.generation_config.eos_token_id == [32000, 32001, 32007]
    assert model.config.vocab_size == PHI3_VOCAB_ROWS > len(tokenizer)


@pytest.mark.parametrize("text", DESCRIPTIONS[:3] + MULTILINGUAL)
def test_the_spm_phi3_tokenizer_splits_text_as_sentencepiece_does(extractor, sentencepiece, text):
    tokenizer = extractor.tokenizer

    ids = tokenizer(text).input_ids

    assert ids == sentencepiece.encode(text)
    assert tokenizer.decode(ids) == text


def test_characters_outside_the_32k_vocabulary_fall_back_to_utf8_bytes(extractor):
    tokenizer = extractor.tokenizer

    for char in ("👗", "🧥", "ẞ"):
        pieces = tokenizer.tokenize(f"a{char}")
        assert [f"<0x{byte:02X}>" for byte in char.encode()] == pieces[-len(char.encode()) :]
        assert tokenizer.unk_token not in pieces


def test_extractor_returns_schema_valid_attributes_for_umlauts_euro_emoji_and_newlines(extractor):
    result = extractor(MULTILINGUAL)

    assert len(result.attributes) == len(MULTILINGUAL)
    for attrs in result.attributes:
        assert list(attrs) == FIELDS
        assert Attributes.model_validate_json(json.dumps(attrs)).model_dump() == attrs


def test_the_tiny_profiles_byte_level_phi3_also_extracts_schema_valid_attributes(phi3_dir):
    # The tiny profile (workers.tiny_text) still ships the byte-level BPE model.
    tiny = Extractor.from_pretrained(str(phi3_dir), torch.device("cpu"), max_batch=2)

    result = tiny([DESCRIPTIONS[0], MULTILINGUAL[1]])

    assert len(result.attributes) == 2
    for attrs in result.attributes:
        assert Attributes.model_validate_json(json.dumps(attrs)).model_dump() == attrs


def test_extractor_returns_schema_valid_attributes_for_twelve_different_inputs(all_results):
    assert isinstance(all_results, ExtractionResult)
    assert len(all_results.attributes) == len(DESCRIPTIONS)
    for attrs in all_results.attributes:
        assert list(attrs) == FIELDS
        assert Attributes.model_validate_json(json.dumps(attrs)).model_dump() == attrs
    # A random model, but the outputs still follow the inputs.
    assert len({json.dumps(attrs) for attrs in all_results.attributes}) > 1
    assert all_results.seconds > 0


def test_extractor_batched_result_equals_one_by_one(extractor, all_results):
    one_by_one = [extractor([text]).attributes[0] for text in DESCRIPTIONS[:5]]

    assert one_by_one == all_results.attributes[:5]


def test_a_static_kv_cache_extracts_the_same_attributes(spm_phi3_dir, all_results, monkeypatch):
    caches = []
    static = Extractor.from_pretrained(
        str(spm_phi3_dir), torch.device("cpu"), max_batch=4, static_cache=True
    )
    generate = static.model.generate

    def spy(*args, **kwargs):
        caches.append(kwargs.get("cache_implementation"))
        return generate(*args, **kwargs)

    monkeypatch.setattr(static.model, "generate", spy)
    attributes = static(DESCRIPTIONS[:4]).attributes

    assert caches == ["static"]
    assert attributes == all_results.attributes[:4]


def test_a_failing_warm_up_is_raised_not_swallowed(extractor, monkeypatch):
    def broken(prompts, **kwargs):
        raise RuntimeError("compiling failed")

    monkeypatch.setattr(extractor._generator, "batch", broken)
    monkeypatch.setattr(extractor, "static_cache", True)

    with pytest.raises(RuntimeError, match="compiling failed"):
        extractor.warm_up()


def test_the_loader_hands_the_extract_options_to_the_extractor(tiny_profile):
    from workers.loader import load_runtimes

    runtimes = load_runtimes(
        ("extract",), tiny_profile, "cpu", extract_options={"static_cache": True, "max_batch": 2}
    )

    assert runtimes.extract.static_cache and runtimes.extract.max_batch == 2


def test_extractor_gives_the_same_output_for_the_same_input_twice(extractor):
    texts = [DESCRIPTIONS[0], DESCRIPTIONS[0]]

    first, second = extractor(texts).attributes

    assert first == second


def test_build_prompt_uses_the_phi3_chat_format(extractor):
    prompt = extractor.build_prompt("A red dress.")

    assert prompt.startswith("<|system|>\n")
    assert "product_type" in prompt
    assert "<|user|>\nExtract the following elements" in prompt
    assert prompt.endswith("<|assistant|>\n")


def test_build_prompt_asks_in_the_original_pipelines_words_around_the_description(extractor):
    prompt = extractor.build_prompt("  A red dress.\n")

    assert prompt == (
        "<|system|>\nYou are an AI assistant that extracts structured product information "
        "from descriptions.<|end|>\n"
        "<|user|>\nExtract the following elements from this product description:\n"
        "1. Product type (what exactly is it?)\n"
        "2. Key visual features (2-3 most distinctive visual elements)\n"
        "3. Color and material details\n"
        "4. Any unique design aspects\n\n"
        "A red dress.\n\n"
        "Return the extracted elements in JSON format with these exact keys: product_type "
        "(simple text string), key_visual_features, color_material_details, design_aspects "
        "(simple comma-separated text strings). Do NOT include lists, arrays, or nested objects "
        "in your JSON.<|end|>\n"
        "<|assistant|>\n"
    )


def test_each_prompt_reaches_the_model_as_a_single_chat_turn(extractor, monkeypatch):
    seen = []
    generate = extractor.model.generate

    def spy(*args, **kwargs):
        seen.extend(extractor.tokenizer.batch_decode(kwargs["input_ids"]))
        return generate(*args, **kwargs)

    monkeypatch.setattr(extractor.model, "generate", spy)
    extractor(DESCRIPTIONS[:2])

    assert len(seen) == 2
    assert all(text.count("<|user|>") == 1 and text.count("<|system|>") == 1 for text in seen)


def test_the_answer_cap_is_the_longest_answer_the_grammar_allows_in_bytes(extractor):
    # Every value at its length limit, with every optional space: one byte per character.
    limits = {"product_type": 40, "key_visual_features": 100}
    limits |= {"color_material_details": 100, "design_aspects": 100}
    longest = Attributes(**{name: "~" * size for name, size in limits.items()})
    body = " , ".join(f'"{name}" : "{value}"' for name, value in longest.model_dump().items())
    payload = "{ " + body + " }"

    assert json.loads(payload) == longest.model_dump()
    assert extractor.max_new_tokens == max_json_tokens(Attributes) == len(payload.encode()) + 1
    assert max_json_tokens(Attributes) < 512
    with pytest.raises(pydantic.ValidationError):
        Attributes(**{name: "~" * (size + 1) if name == "product_type" else "x"
                      for name, size in limits.items()})  # fmt: skip


def test_the_grammar_outlines_builds_keeps_the_answer_in_bounded_ascii():
    regex = build_regex_from_schema(json.dumps(Attributes.model_json_schema()))

    assert regex.count("{0,100}") == 3 and regex.count("{0,40}") == 1
    assert re.fullmatch(regex, '{"product_type":"dress","key_visual_features":"a-line",'
                        '"color_material_details":"red linen","design_aspects":"zip"}')  # fmt: skip
    assert not re.search(regex.replace("\\{", "{"), '"product_type":"cr\u00eape"')
    with pytest.raises(pydantic.ValidationError):
        Attributes(product_type="crêpe dress", key_visual_features="", color_material_details="",
                   design_aspects="")  # fmt: skip


def test_max_json_tokens_needs_a_bounded_answer_field_everywhere():
    class Unbounded(pydantic.BaseModel):
        name: str

    with pytest.raises(ValueError):
        max_json_tokens(Unbounded)


def test_a_static_cache_has_one_fixed_length_and_long_prompts_use_the_dynamic_one(
    spm_phi3_dir, monkeypatch
):
    static = Extractor.from_pretrained(
        str(spm_phi3_dir), torch.device("cpu"), max_batch=2, static_cache=True
    )
    calls, rows = [], []
    generate = static.model.generate

    def spy(*args, **kwargs):
        calls.append((kwargs.get("cache_implementation"), kwargs.get("max_cache_len")))
        rows.append(len(args[0]) if args else len(kwargs["input_ids"]))
        return generate(*args, **kwargs)

    monkeypatch.setattr(static.model, "generate", spy)
    long = "A wool coat. " + " ".join(f"panel{i} with a seam" for i in range(200))
    static([DESCRIPTIONS[0], DESCRIPTIONS[1]])
    static([DESCRIPTIONS[2], long])

    assert calls == [("static", STATIC_CACHE_TOKENS), (None, None)]
    assert rows == [2, 2]
    assert static.model._previous_max_cache_length == STATIC_CACHE_TOKENS


def test_extractor_raises_runtime_error_instead_of_falling_back(extractor, monkeypatch):
    truncated = ['{"product_type": "dress"}']
    monkeypatch.setattr(extractor, "_generate", lambda prompts, tokens, static: truncated)

    with pytest.raises(RuntimeError):
        extractor(["A red dress."])


@pytest.mark.parametrize(
    "texts",
    [[], "A red dress.", [b"A red dress."], [""], ["ok", " \n "]],
    ids=["empty list", "not a list", "non-str item", "empty text", "blank text"],
)
def test_check_inputs_raises_value_error_for_bad_texts(extractor, texts):
    with pytest.raises(ValueError):
        extractor.check_inputs(texts)


def test_a_description_too_long_for_the_context_is_cut_to_fit_with_a_notice(extractor):
    words = " ".join(f"panel{i % 50} with seam detail" for i in range(2000))
    long = f"A long wool coat. {words}"

    result = extractor([long, DESCRIPTIONS[0]])

    cut, kept = result.notices
    assert cut is not None and "description cut from" in cut and kept is None
    prompt, _ = extractor.fit_prompt(long)
    assert len(extractor.tokenizer(prompt, add_special_tokens=False).input_ids) <= (
        extractor.context_tokens - extractor.max_new_tokens
    )
    assert prompt.count("A long wool coat.") == 1  # the description's start is kept
    assert all(Attributes.model_validate(found) for found in result.attributes)


def test_an_answer_cap_that_leaves_no_room_for_a_prompt_is_refused(spm_phi3_dir):
    with pytest.raises(ValueError, match="no room for a prompt"):
        Extractor.from_pretrained(str(spm_phi3_dir), torch.device("cpu"), max_new_tokens=4096)


def test_a_static_batch_is_padded_to_its_full_size_and_answers_only_its_own_rows(
    spm_phi3_dir, all_results, monkeypatch
):
    static = Extractor.from_pretrained(
        str(spm_phi3_dir), torch.device("cpu"), max_batch=4, static_cache=True
    )
    rows = []
    generate = static.model.generate

    def spy(*args, **kwargs):
        rows.append(len(args[0]) if args else len(kwargs["input_ids"]))
        return generate(*args, **kwargs)

    monkeypatch.setattr(static.model, "generate", spy)
    result = static(DESCRIPTIONS[:3])

    assert rows == [4]
    assert result.attributes == all_results.attributes[:3]
