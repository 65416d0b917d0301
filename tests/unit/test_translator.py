"""Translator runtime on the tiny random-weight MarianMT model (outputs are noise)."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch

from workers.tiny_text import TINY_MARIAN_MAX_LENGTH, build_tiny_marian
from workers.translator import MAX_LINE_CHARS, TranslationResult, Translator, split_line

TEXTS = [
    "Das Kleid aus Baumwolle ist rot.\n\nEs hat kurze Ärmel und Knöpfe.",
    "Hose aus Leinen, Größe 38 – 29,99 €",
    "  Schwarze Lederstiefel mit Blockabsatz (5 cm).  \nReißverschluss seitlich.\nMade in Italy®",
    "Strickjacke mit V-Ausschnitt.",
    "Ein Schal aus Kaschmir.\nFransen an beiden Enden.",
]


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory, offline):
    folder = tmp_path_factory.mktemp("marian")
    build_tiny_marian(folder)
    return folder


@pytest.fixture(scope="module")
def translator(marian_dir):
    return Translator.from_pretrained(
        str(marian_dir), torch.device("cpu"), max_batch_lines=3, max_new_tokens=8
    )


@pytest.fixture(scope="module")
def configured_translator(marian_dir):
    # No decoding options at all: only the model's generation_config decides.
    return Translator.from_pretrained(str(marian_dir), torch.device("cpu"), max_batch_lines=3)


def non_empty_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_tiny_marian_build_is_reproducible(marian_dir, tmp_path):
    build_tiny_marian(tmp_path)
    for name in ("source.spm", "target.spm", "vocab.json", "model.safetensors"):
        assert (tmp_path / name).read_bytes() == (marian_dir / name).read_bytes(), name


def test_tiny_marian_tokenizer_knows_umlauts_digits_and_symbols(translator):
    tokenizer = translator.tokenizer
    ids = tokenizer("Größe 38 – 29,99 € (Baumwolle) ß® 100 % äöü ÄÖÜ: ja!").input_ids
    assert tokenizer.unk_token_id not in ids


def test_translator_returns_one_text_per_input_with_lines_kept(translator):
    result = translator(TEXTS)

    assert isinstance(result, TranslationResult)
    assert len(result.texts) == len(TEXTS)
    for source, english in zip(TEXTS, result.texts, strict=True):
        lines = english.split("\n")
        assert len(lines) == len(non_empty_lines(source))
        assert all(line.strip() for line in lines)
    assert result.seconds > 0


def test_translator_batched_result_equals_one_by_one(translator):
    batched = translator(TEXTS).texts

    one_by_one = [translator([text]).texts[0] for text in TEXTS]

    assert batched == one_by_one


def test_translator_gives_the_same_output_for_the_same_input_twice(translator):
    assert translator(TEXTS[:2]).texts == translator(TEXTS[:2]).texts


def test_translator_output_depends_on_the_input(translator):
    lines = [line for text in TEXTS for line in non_empty_lines(text)]

    english = translator(["\n".join(lines)]).texts[0].split("\n")

    assert len(set(english)) > 1


def test_split_line_keeps_a_short_line_whole():
    assert split_line("Ein Satz. Noch ein Satz.") == ["Ein Satz. Noch ein Satz."]


def test_split_line_cuts_a_long_line_at_sentence_ends_only():
    sentences = [f"Satz Nummer {index} über das Kleid." for index in range(40)]
    line = " ".join(sentences)

    pieces = split_line(line)

    assert len(pieces) > 1
    assert all(len(piece) <= MAX_LINE_CHARS for piece in pieces)
    assert all(piece.endswith(".") for piece in pieces)
    assert " ".join(pieces) == line


def test_translator_turns_a_very_long_line_into_one_english_line(translator):
    long_line = " ".join(f"Satz Nummer {index} über das Kleid." for index in range(40))

    result = translator([f"Kopfzeile\n{long_line}"])

    assert len(result.texts[0].split("\n")) == 2


@pytest.mark.parametrize(
    "texts",
    [[], "Das Kleid ist rot.", ["ok", 3], [""], ["ok", "  \n\t "], None],
    ids=["empty list", "not a list", "non-str item", "empty text", "blank text", "none"],
)
def test_check_inputs_raises_value_error_for_bad_texts(translator, texts):
    with pytest.raises(ValueError):
        translator.check_inputs(texts)
    with pytest.raises(ValueError):
        translator(texts)


def test_tiny_marian_decodes_like_opus_mt_de_en(translator):
    config = translator.model.generation_config
    pad_id = translator.tokenizer.pad_token_id

    assert config.num_beams == 4
    assert config.bad_words_ids == [[pad_id]]
    assert config.max_length == TINY_MARIAN_MAX_LENGTH  # 512 for opus-mt: see the builder
    assert (config.eos_token_id, config.pad_token_id) == (0, pad_id)
    assert config.decoder_start_token_id == pad_id


def test_translator_decodes_as_the_models_own_generation_config_says(configured_translator):
    model, tokenizer = configured_translator.model, configured_translator.tokenizer
    lines = [line.strip() for text in TEXTS for line in non_empty_lines(text)]

    def direct(line: str, **overrides) -> str:
        with torch.no_grad():
            output = model.generate(**tokenizer(line, return_tensors="pt"), **overrides)
        return " ".join(tokenizer.batch_decode(output, skip_special_tokens=True)[0].split())

    expected = [direct(line) for line in lines]
    # Otherwise this test could not tell beam search from the greedy decoding it replaces.
    assert any(
        direct(line, num_beams=1) != english for line, english in zip(lines, expected, strict=True)
    )

    assert configured_translator(["\n".join(lines)]).texts[0].split("\n") == expected
