"""Tiny random-weight text models for the ``tiny`` profile.

Both builders write a folder that loads with the normal ``from_pretrained`` APIs, offline: the
tokenizers are trained here on a small fashion corpus, the weights are random (seeded, so a
build is reproducible). They exist to run the whole farm without any download; their outputs
are noise.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import sentencepiece as spm
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    MarianConfig,
    MarianMTModel,
    MarianTokenizer,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedTokenizerFast,
)

SEED = 0
TINY_MARIAN_MAX_LENGTH = 48

GERMAN_CORPUS = """\
Das Damenkleid aus reiner Baumwolle hat einen runden Ausschnitt und kurze Ärmel.
Die Herrenjacke ist aus robustem Leinen gefertigt und hat zwei aufgesetzte Taschen.
Ein locker geschnittener Pullover aus weicher Merinowolle in Dunkelblau.
Die Jeans im Slim-Fit hat fünf Taschen, einen Reißverschluss und Knöpfe aus Messing.
Schwarze Lederstiefel mit Blockabsatz (5 cm) und seitlichem Reißverschluss.
Der Mantel aus Schurwolle ist knielang, zweireihig und hat einen breiten Reverskragen.
Eine Bluse aus fließender Viskose mit Blumenmuster in Rot, Weiß und Grün.
Das T-Shirt aus 100 % Bio-Baumwolle ist in den Größen XS bis XXL erhältlich.
Der Rock ist plissiert, midilang und hat einen elastischen Bund.
Strickjacke mit V-Ausschnitt, Rippbündchen und Perlmuttknöpfen; Farbe: Beige.
Die Sneaker haben eine weiße Gummisohle, Schnürung und ein Obermaterial aus Wildleder.
Ein Schal aus Kaschmir (180 x 30 cm) mit Fransen an beiden Enden.
Die Hose hat Bügelfalten, Gürtelschlaufen und einen Saum mit Umschlag.
Sommerkleid mit Spaghettiträgern, gesmoktem Oberteil und Volants am Saum.
Das Hemd aus Oxford-Baumwolle hat einen Button-down-Kragen und eine Brusttasche.
Die Steppjacke ist wasserabweisend, leicht und mit Daunen gefüttert.
Ein Anzug aus Schurwolle, Größe 50, Preis: 299,99 € statt 349,00 €.
Kapuzenpullover mit Kängurutasche, gerippten Bündchen und Logo-Stickerei®.
Die Handtasche aus genarbtem Leder hat einen abnehmbaren Schulterriemen.
Pflegehinweis: Bei 30 °C waschen, nicht im Trockner trocknen!
Material: 95 % Polyester, 5 % Elasthan; Futter: 100 % Viskose.
Das Modell ist 1,78 m groß und trägt Größe M.
Größe, Passform & Stil – schmal geschnitten, hüftlang, mit Stehkragen.
Streifen in Marineblau/Weiß; Knopfleiste mit 6 Knöpfen; Artikel-Nr. 4711-0815.
Weiße Bluse mit Rüschen? Ja, und dazu ein schwarzer Bleistiftrock.
Die Mütze aus Grobstrick hat einen Bommel aus Kunstfell.
Süße Träger, große Öffnung, äußerst bequem, übergroß geschnitten.
"""

ENGLISH_CORPUS = """\
The women's dress is made of pure cotton and has a round neckline and short sleeves.
The men's jacket is made of sturdy linen and has two patch pockets.
A loose-fitting sweater made of soft merino wool in dark blue.
The slim-fit jeans have five pockets, a zip and brass buttons.
Black leather boots with a block heel (5 cm) and a side zip.
The coat made of virgin wool is knee-length, double-breasted and has a wide lapel collar.
A blouse made of flowing viscose with a floral print in red, white and green.
The T-shirt made of 100% organic cotton is available in sizes XS to XXL.
The skirt is pleated, midi-length and has an elastic waistband.
Cardigan with a V-neck, ribbed cuffs and mother-of-pearl buttons; colour: beige.
The sneakers have a white rubber sole, laces and a suede upper.
A cashmere scarf (180 x 30 cm) with fringes at both ends.
The trousers have pressed creases, belt loops and a turn-up hem.
Summer dress with spaghetti straps, a smocked bodice and ruffles at the hem.
The shirt made of Oxford cotton has a button-down collar and a chest pocket.
The quilted jacket is water-repellent, lightweight and lined with down.
A suit made of virgin wool, size 50, price: $299.99 instead of $349.00.
Hoodie with a kangaroo pocket, ribbed cuffs and logo embroidery®.
The handbag made of grained leather has a detachable shoulder strap.
Care: wash at 30 °C, do not tumble dry!
Material: 95% polyester, 5% elastane; lining: 100% viscose.
The model is 1.78 m tall and wears size M.
Size, fit & style - slim cut, hip-length, with a stand-up collar.
Stripes in navy/white; button placket with 6 buttons; item no. 4711-0815.
White blouse with ruffles? Yes, and a black pencil skirt to go with it.
The chunky-knit beanie has a faux-fur pom-pom.
"""

# One line with every character we expect in catalog text, so that none becomes <unk>.
CHARSET_LINE = (
    "0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz ÄÖÜäöüß éèàçñ "
    "®©™°€$£%&§ .,;:!?'\"()[]{}<>/\\|-–—_+*=#@~^`… «»„“”‚‘’"
)

PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

PHI3_SPECIAL_TOKENS = ["<|endoftext|>", "<s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

# Extra text for the Phi-3 tokenizer so JSON punctuation and the attribute names become tokens.
JSON_LINES = """\
{"product_type": "dress", "key_visual_features": "round neckline, short sleeves",
"color_material_details": "white cotton", "design_aspects": "slim fit, knee-length"}
Extract the product type, key visual features, color and material details and design aspects.
"""


def _train_sentencepiece(text: str, vocab_size: int) -> bytes:
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()),
        model_writer=writer,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        normalization_rule_name="identity",
        hard_vocab_limit=False,
        num_threads=1,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        minloglevel=2,
    )
    return writer.getvalue()


def _marian_vocab(source: bytes, target: bytes) -> dict[str, int]:
    """A joint vocabulary laid out like opus-mt: ``</s>`` 0, ``<unk>`` 1, ``<pad>`` last."""
    pieces: list[str] = []
    for blob in (source, target):
        processor = spm.SentencePieceProcessor(model_proto=blob)
        pieces += [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    return vocab


def _write_marian_tokenizer(out: Path) -> dict[str, int]:
    """Train both SentencePiece models, write them with ``vocab.json``; return the vocab."""
    source = _train_sentencepiece(GERMAN_CORPUS + CHARSET_LINE, vocab_size=300)
    target = _train_sentencepiece(ENGLISH_CORPUS + CHARSET_LINE, vocab_size=300)
    (out / "source.spm").write_bytes(source)
    (out / "target.spm").write_bytes(target)
    vocab = _marian_vocab(source, target)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1))
    tokenizer = MarianTokenizer(
        source_spm=str(out / "source.spm"),
        target_spm=str(out / "target.spm"),
        vocab=str(out / "vocab.json"),
        source_lang="de",
        target_lang="en",
    )
    tokenizer.save_pretrained(out)
    return vocab


def build_tiny_marian(out: Path) -> None:
    """Build a tiny random-weight opus-mt-de-en style MarianMT model and its tokenizer.

    Args:
        out: an empty folder; it receives the model, ``source.spm``, ``target.spm`` and
            ``vocab.json``.
    """
    vocab = _write_marian_tokenizer(Path(out))
    pad_id = vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=512,
        activation_function="swish",
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        pad_token_id=pad_id,
        eos_token_id=0,
        decoder_start_token_id=pad_id,
        forced_eos_token_id=0,
        # Wide random weights, so that different inputs give different (noise) outputs.
        init_std=0.5,
    )
    torch.manual_seed(SEED)
    model = MarianMTModel(config).eval()
    # Helsinki-NLP/opus-mt-de-en's generation_config, with this vocabulary's pad id, except
    # max_length (512 there): a trained model ends a line near the source's length, a random
    # one never does, and four beams to 512 tokens per line made a catalog line cost seconds.
    model.generation_config = GenerationConfig(
        bad_words_ids=[[pad_id]],
        decoder_start_token_id=pad_id,
        eos_token_id=0,
        forced_eos_token_id=0,
        pad_token_id=pad_id,
        num_beams=4,
        max_length=TINY_MARIAN_MAX_LENGTH,
    )
    model.save_pretrained(out)


def _train_byte_bpe(text: str, vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=PHI3_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.splitlines(), trainer=trainer)
    return tokenizer


def build_tiny_phi3(out: Path) -> None:
    """Build a tiny random-weight Phi-3 causal LM with a byte-level BPE chat tokenizer.

    Args:
        out: an empty folder; it receives the model and a ``PreTrainedTokenizerFast`` with the
            Phi-3 chat template, left padding and a pad token.
    """
    out = Path(out)
    backend = _train_byte_bpe(ENGLISH_CORPUS + JSON_LINES + CHARSET_LINE, vocab_size=600)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=4096,
        chat_template=PHI3_CHAT_TEMPLATE,
    )
    tokenizer.save_pretrained(out)

    # Like Phi-3-mini-4k-instruct: a chat turn may also stop at <|end|>.
    stop_ids = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")]
    write_tiny_phi3_model(out, tokenizer, len(tokenizer), stop_ids)


def write_tiny_phi3_model(out: Path, tokenizer, vocab_size: int, stop_ids: list[int]) -> None:
    """Save a seeded random-weight one-layer Phi-3 causal LM for ``tokenizer`` into ``out``.

    Args:
        out: the folder (the tokenizer is saved there by the caller).
        tokenizer: its bos, eos and pad ids go into the config.
        vocab_size: rows of the embedding (Phi-3-mini has more rows than tokens).
        stop_ids: token ids that end a generation.
    """
    config = Phi3Config(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.5,
    )
    torch.manual_seed(SEED)
    model = Phi3ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
