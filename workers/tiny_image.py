"""Tiny random-weight FLUX, FLUX LoRA and CLIP models for the ``tiny`` profile.

Each builder fills an empty folder so that it loads through the normal ``from_pretrained`` APIs
with ``HF_HUB_OFFLINE=1``: same architectures as FLUX.1-schnell and CLIP, toy sizes, random
weights, and tokenizers trained here on a small fashion corpus. Builds are seeded, so two builds
give the same weights. Images from these models are noise.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import math
import tempfile
from pathlib import Path

import sentencepiece as spm
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
)
from peft import LoraConfig, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

SEED = 0
CLIP_MAX_LENGTH = 77
CLIP_SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>"]
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# OpenAI kept 49,152 - 256 - 2 merges of the file: with 512 byte tokens and 2 specials, 49,408.
CLIP_MERGES = 49152 - 256 - 2
T5_MAX_LENGTH = 512
T5_EXTRA_IDS = 100
HIDDEN = 32  # width of every tiny text encoder and of the transformer's text inputs
LATENT_CHANNELS = 16  # as in FLUX.1; packed 2x2 into the transformer's 64 input channels
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_ENCODER_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]

FASHION_CORPUS = (
    "A slim-fit navy wool blazer with two buttons, notch lapels and a single vent.",
    "Women's high-waisted straight-leg jeans in light blue denim, 98% cotton, 2% elastane.",
    "Oversized white cotton T-shirt with a crew neck and dropped shoulders; size XS-XXL.",
    "Black leather ankle boots with a 5 cm block heel and a side zip (EU 36-42).",
    "Red floral midi dress with puff sleeves, a square neckline and a tiered skirt.",
    "Men's grey merino crew-neck sweater, ribbed cuffs & hem, machine washable at 30 C.",
    "Beige trench coat, double-breasted, belted waist, water-repellent finish: 100% polyester.",
    "Khaki cargo trousers with six pockets, drawstring ankles and a relaxed fit.",
    "Silk satin camisole in champagne, adjustable straps, bias cut, length 58 cm.",
    "Chunky knit cardigan in oatmeal with horn buttons and patch pockets.",
    "White low-top sneakers, vegan leather upper, rubber sole, sizes 37 to 46.",
    "Pleated tennis skirt in bottle green, built-in shorts, UPF 50+ fabric.",
    "Striped Breton top: navy/ecru stripes, boat neck, 3/4 sleeves.",
    "Quilted puffer jacket in olive with a detachable hood; fill weight 180 g.",
    "Linen shirt in sky blue, button-down collar, curved hem, regular fit (S, M, L).",
    'Tailored wide-leg trousers in charcoal, pressed creases, 32" inseam.',
    "Cashmere scarf, 180 x 30 cm, camel with fringed ends - hand wash only!",
    "Denim jacket with a sherpa collar, chest pockets and brass buttons #4.",
    "Sequined evening gown in midnight blue with a thigh-high slit and open back.",
    "Cotton hoodie in heather grey, kangaroo pocket, brushed fleece inside (350 gsm).",
    "Leather crossbody bag in cognac, 22 x 15 x 7 cm, adjustable strap @ 120 cm.",
    "Straw sun hat with a wide brim and a black ribbon band; one size fits most.",
    "Model wears size 8/M and is 178 cm tall; photographed on a plain studio background.",
    "Product photo of a yellow raincoat on a mannequin, soft light, front view, 1024x1024.",
    "Ribbed bodycon dress in burgundy, long sleeves, knee length, 95% viscose 5% spandex.",
    "Corduroy overshirt in rust with snap buttons; price EUR 59.99 (was 79.99).",
    'Running shorts with a 5" liner, reflective logo, zip pocket = keys & cards.',
    "Velvet blazer in emerald, peak lapels, satin lining; dry clean only.",
    "Kids' rain boots in pink with a star print, sizes 24-35, 100% natural rubber.",
    "Gold hoop earrings, 925 sterling silver, 18k plated, diameter 25 mm; [gift box].",
    "Crème café-style blouse — made in Düsseldorf, €45 (Größe 38, Übergröße, Mäntel, Röcke).",
)


def build_tiny_flux(out: Path) -> None:
    """Build a tiny FLUX.1-schnell-architecture pipeline into ``out``.

    Args:
        out: an empty folder; receives the folder layout ``FluxPipeline.save_pretrained`` writes.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        clip_tokenizer = _clip_tokenizer()
        t5_tokenizer = _train_t5_tokenizer()
        pipe = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
            vae=_tiny_vae(),
            text_encoder=CLIPTextModel(_clip_text_config(clip_tokenizer)),
            tokenizer=clip_tokenizer,
            text_encoder_2=T5EncoderModel(_t5_config(t5_tokenizer)),
            tokenizer_2=t5_tokenizer,
            transformer=_tiny_transformer(),
        )
    pipe.save_pretrained(out)
    # FLUX.1-schnell's tokenizer folder holds CLIP's vocab.json + merges.txt, no tokenizer.json:
    # loading it converts them, as it will for the real one.
    (Path(out) / "tokenizer" / "tokenizer.json").unlink()
    clip_tokenizer_files(Path(out) / "tokenizer")


def build_tiny_flux_lora(out: Path, flux_dir: Path) -> None:
    """Build a random (non-zero) LoRA for the tiny FLUX transformer's attention projections.

    Args:
        out: an empty folder; receives ``pytorch_lora_weights.safetensors``.
        flux_dir: a folder made by :func:`build_tiny_flux`.
    """
    transformer = FluxTransformer2DModel.from_pretrained(Path(flux_dir) / "transformer")
    rank = 4
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=LORA_TARGETS,
        # False keeps peft from zeroing lora_B, so the LoRA changes the output.
        init_lora_weights=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 1)
        transformer.add_adapter(config)
    layers = get_peft_model_state_dict(transformer)
    # peft's default init is small next to the tiny model's weights; scale so the effect is plain.
    layers = {name: weight * 4.0 for name, weight in layers.items()}
    # No adapter metadata: safetensors writes metadata in hash order, which would make builds
    # differ byte for byte. With alpha == rank the loader's default scale (1) is the right one.
    FluxPipeline.save_lora_weights(out, transformer_lora_layers=layers)


def build_tiny_flux_lora_with_text_encoder(out: Path, flux_dir: Path) -> None:
    """Build a LoRA for the tiny FLUX transformer and its CLIP text encoder, as some hub
    LoRAs are trained.

    The transformer part equals :func:`build_tiny_flux_lora`'s.

    Args:
        out: an empty folder; receives ``pytorch_lora_weights.safetensors``.
        flux_dir: a folder made by :func:`build_tiny_flux`.
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as folder:
        build_tiny_flux_lora(Path(folder), flux_dir)
        saved = load_file(Path(folder) / "pytorch_lora_weights.safetensors")
    prefix = "transformer."
    transformer_layers = {name.removeprefix(prefix): weight for name, weight in saved.items()}
    text_encoder = CLIPTextModel.from_pretrained(Path(flux_dir) / "text_encoder")
    rank = 4
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=TEXT_ENCODER_LORA_TARGETS, init_lora_weights=False
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 3)
        # peft directly: transformers' add_adapter wants a newer peft than diffusers does.
        inject_adapter_in_model(config, text_encoder)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder))
    # Scaled as the transformer's, so that the text encoder's share of the effect is plain.
    layers = {name: weight * 4.0 for name, weight in layers.items()}
    FluxPipeline.save_lora_weights(
        out, transformer_lora_layers=transformer_layers, text_encoder_lora_layers=layers
    )


def build_tiny_clip(out: Path) -> None:
    """Build a tiny CLIP model and processor (32x32 images) into ``out``.

    Args:
        out: an empty folder; receives what ``CLIPModel`` and ``CLIPProcessor`` load.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 2)
        tokenizer = _clip_tokenizer()
        config = CLIPConfig(
            text_config=_clip_text_config(tokenizer).to_dict(),
            vision_config={
                "hidden_size": HIDDEN,
                "intermediate_size": 37,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "image_size": 32,
                "patch_size": 8,
                "projection_dim": HIDDEN,
            },
            projection_dim=HIDDEN,
            # Real CLIP's learned scale is 100; start there so tiny scores have the real range.
            logit_scale_init_value=math.log(100.0),
        )
        model = CLIPModel(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    # The real repo's layout: the image processor in preprocessor_config.json, the tokenizer
    # both as tokenizer.json and as CLIP's vocab.json + merges.txt.
    image_processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    clip_tokenizer_files(Path(out))
    model.save_pretrained(out)


def clip_bpe_vocabulary() -> Path:
    """The path of CLIP's own BPE merges, as open-clip-torch ships them (not imported).

    openai/clip-vit-large-patch14's ``vocab.json`` and ``merges.txt`` (FLUX's CLIP tokenizer
    too) are made from this file, so the tiny models tokenize exactly as the real ones do.

    Returns:
        ``bpe_simple_vocab_16e6.txt.gz``; ``FileNotFoundError`` naming the install otherwise.
    """
    # find_spec does not run open_clip's __init__, which imports torchvision.
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / CLIP_BPE_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the tiny models use CLIP's real vocabulary ({CLIP_BPE_FILE}), which open-clip-torch "
        "ships: pip install --no-deps open-clip-torch"
    )


def clip_tokenizer_files(out: Path) -> None:
    """Write CLIP's ``vocab.json`` and ``merges.txt`` into ``out``, as the real repos hold them.

    The layout is OpenAI's: the 256 byte characters, the same as word ends, one token per
    merge (48,894 of them), then the two special tokens: 49,408 tokens.

    Args:
        out: a folder.
    """
    with gzip.open(clip_bpe_vocabulary(), "rt", encoding="utf-8") as bpe:
        lines = bpe.read().split("\n")
    merges = lines[1 : CLIP_MERGES + 1]
    alphabet = list(_bytes_to_unicode().values())
    pieces = alphabet + [char + "</w>" for char in alphabet]
    pieces += ["".join(merge.split()) for merge in merges] + CLIP_SPECIAL_TOKENS
    (out / "vocab.json").write_text(json.dumps({piece: i for i, piece in enumerate(pieces)}))
    (out / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table, which CLIP's BPE is written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items(), key=lambda item: (item[0] not in printable, item[0])))


def _clip_tokenizer() -> CLIPTokenizer:
    """openai/clip-vit-large-patch14's tokenizer, built from CLIP's shipped BPE merges."""
    with tempfile.TemporaryDirectory() as folder:
        clip_tokenizer_files(Path(folder))
        return CLIPTokenizer.from_pretrained(folder, model_max_length=CLIP_MAX_LENGTH)


def _train_t5_tokenizer(vocab_size: int = 300) -> T5TokenizerFast:
    """Train a SentencePiece unigram on the fashion corpus and wrap it as a T5 tokenizer."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(FASHION_CORPUS),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="identity",
        # T5's layout: <pad>=0, </s>=1, <unk>=2, no <s>.
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [
        (processor.id_to_piece(i), processor.get_score(i))
        for i in range(processor.get_piece_size())
    ]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(T5_EXTRA_IDS))]
    return T5TokenizerFast(vocab=pieces, extra_ids=T5_EXTRA_IDS, model_max_length=T5_MAX_LENGTH)


def _clip_text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    """A tiny CLIP text config whose vocabulary and special ids match ``tokenizer``."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=HIDDEN,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _t5_config(tokenizer: T5TokenizerFast) -> T5Config:
    """A tiny T5 encoder config whose vocabulary and special ids match ``tokenizer``."""
    return T5Config(
        vocab_size=len(tokenizer),
        d_model=HIDDEN,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )


def _tiny_vae() -> AutoencoderKL:
    """A 4-block VAE (scale factor 8) with FLUX's 16 latent channels."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _tiny_transformer() -> FluxTransformer2DModel:
    """A one double-stream, one single-stream block FLUX transformer without guidance embeds."""
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=HIDDEN,
        pooled_projection_dim=HIDDEN,
        guidance_embeds=False,
        axes_dims_rope=(4, 4, 8),
    )
