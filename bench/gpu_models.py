"""Random-weight models for the GPU benchmark, built straight on the device with no download.

``real_spec`` gives the real architectures' shapes (FLUX.1-schnell, T5-XXL, CLIP-L, the FLUX
VAE, Phi-3-mini, CLIP ViT-L/14, opus-mt-de-en); ``tiny_spec`` gives the tiny profile's, so that
``--tiny`` runs the same code on a CPU in seconds. Tokenizers always come from the tiny
profile (no real tokenizer can be downloaded); their ids all lie below the real vocabularies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
)
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    MarianConfig,
    MarianMTModel,
    Phi3Config,
    Phi3ForCausalLM,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from workers.profiles import Profile

# FLUX.1-schnell's transformer: 19 double-stream and 38 single-stream blocks, 24 heads of 128.
FLUX_TRANSFORMER = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "pooled_projection_dim": 768, "guidance_embeds": False, "axes_dims_rope": (16, 56, 56),
}  # fmt: skip
FLUX_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32,
    "sample_size": 1024, "scaling_factor": 0.3611, "shift_factor": 0.1159,
    "use_quant_conv": False, "use_post_quant_conv": False,
}  # fmt: skip
FLUX_SCHEDULER = {"shift": 1.0, "use_dynamic_shifting": False, "num_train_timesteps": 1000}
CLIP_VISION_L14 = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
    "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "projection_dim": 768,
    "hidden_act": "quick_gelu",
}  # fmt: skip
CLIP_IMAGE_SIZE = 224
REAL_SHAPE = {"width": 1024, "height": 1024, "steps": 4}
TINY_SHAPE = {"width": 64, "height": 64, "steps": 2}
# Random weights never emit an end token; every translated line is forced to this many tokens
# (about one catalog sentence), so the figure is per line of a known length.
REAL_TRANSLATION_TOKENS = 64
TINY_TRANSLATION_TOKENS = 8


@dataclass
class ModelSpec:
    """Configurations and tokenizers of every model the benchmark builds."""

    name: str
    transformer: dict
    vae: dict
    scheduler: dict
    t5: T5Config
    clip_text: CLIPTextConfig
    clip: CLIPConfig
    phi3: Phi3Config
    marian: MarianConfig
    clip_tokenizer: CLIPTokenizer
    t5_tokenizer: T5TokenizerFast
    phi3_tokenizer: object
    marian_tokenizer: object
    clip_processor: CLIPProcessor
    width: int
    height: int
    steps: int
    translation_tokens: int


@dataclass
class Parts:
    """The built models, ready to be wrapped by the farm's runtimes."""

    pipeline: FluxPipeline
    marian: MarianMTModel
    phi3: Phi3ForCausalLM
    clip: CLIPModel


def _tokenizers(profile: Profile) -> dict:
    flux = Path(profile.renderer)
    return {
        "clip_tokenizer": CLIPTokenizer.from_pretrained(flux / "tokenizer"),
        "t5_tokenizer": T5TokenizerFast.from_pretrained(flux / "tokenizer_2"),
        "phi3_tokenizer": AutoTokenizer.from_pretrained(profile.extractor),
        "marian_tokenizer": AutoTokenizer.from_pretrained(profile.translator),
    }


def tiny_spec(profile: Profile) -> ModelSpec:
    """The tiny profile's architectures, read from its folders.

    Args:
        profile: the built tiny profile.

    Returns:
        The spec.
    """
    flux = Path(profile.renderer)
    return ModelSpec(
        name="tiny",
        transformer=dict(FluxTransformer2DModel.load_config(flux / "transformer")),
        vae=dict(AutoencoderKL.load_config(flux / "vae")),
        scheduler=dict(FlowMatchEulerDiscreteScheduler.load_config(flux / "scheduler")),
        t5=T5Config.from_pretrained(flux / "text_encoder_2"),
        clip_text=CLIPTextConfig.from_pretrained(flux / "text_encoder"),
        clip=CLIPConfig.from_pretrained(profile.scorer),
        phi3=Phi3Config.from_pretrained(profile.extractor),
        marian=MarianConfig.from_pretrained(profile.translator),
        clip_processor=CLIPProcessor.from_pretrained(profile.scorer),
        translation_tokens=TINY_TRANSLATION_TOKENS,
        **_tokenizers(profile),
        **TINY_SHAPE,
    )


def real_spec(profile: Profile) -> ModelSpec:
    """The real models' architectures, with the tiny profile's tokenizers.

    Args:
        profile: the built tiny profile (for its tokenizers).

    Returns:
        The spec.
    """
    tokenizers = _tokenizers(profile)
    clip_text = _clip_text_l(tokenizers["clip_tokenizer"])
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": CLIP_IMAGE_SIZE},
            crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE},
        ),
        tokenizer=tokenizers["clip_tokenizer"],
    )
    return ModelSpec(
        name="real-shape",
        transformer=dict(FLUX_TRANSFORMER),
        vae=dict(FLUX_VAE),
        scheduler=dict(FLUX_SCHEDULER),
        t5=_t5_xxl(tokenizers["t5_tokenizer"]),
        clip_text=clip_text,
        clip=CLIPConfig(
            text_config=clip_text.to_dict(),
            vision_config=CLIP_VISION_L14,
            projection_dim=768,
            logit_scale_init_value=math.log(100.0),
        ),
        phi3=_phi3_mini(tokenizers["phi3_tokenizer"]),
        marian=_opus_mt(tokenizers["marian_tokenizer"]),
        clip_processor=processor,
        translation_tokens=REAL_TRANSLATION_TOKENS,
        **tokenizers,
        **REAL_SHAPE,
    )


def _t5_xxl(tokenizer) -> T5Config:
    return T5Config(
        vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
        relative_attention_max_distance=128, layer_norm_epsilon=1e-6, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )  # fmt: skip


def _clip_text_l(tokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, projection_dim=768,
        hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip


def _phi3_mini(tokenizer) -> Phi3Config:
    return Phi3Config(
        vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
        original_max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip


def _opus_mt(tokenizer) -> MarianConfig:
    return MarianConfig(
        vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
        decoder_ffn_dim=2048, max_position_embeddings=512, activation_function="swish",
        scale_embedding=True, share_encoder_decoder_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, forced_eos_token_id=None,
    )  # fmt: skip


@contextmanager
def materialized_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly on ``device`` in ``dtype`` (no CPU copy, no fp32 detour).

    Args:
        device: where new tensors go.
        dtype: the floating-point dtype new tensors get.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), torch.no_grad():
            yield
    finally:
        torch.set_default_dtype(previous)


def build_parts(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> Parts:
    """Build every model of ``spec`` with random weights on ``device``.

    Args:
        spec: what to build.
        device: where the weights live.
        dtype: their dtype (bf16 on a GPU).

    Returns:
        The parts, in eval mode.
    """
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(spec.scheduler)  # float32, CPU
    with materialized_on(device, dtype):
        pipeline = FluxPipeline(
            scheduler=scheduler,
            vae=AutoencoderKL.from_config(spec.vae),
            text_encoder=CLIPTextModel(spec.clip_text),
            tokenizer=spec.clip_tokenizer,
            text_encoder_2=T5EncoderModel(spec.t5),
            tokenizer_2=spec.t5_tokenizer,
            transformer=FluxTransformer2DModel.from_config(spec.transformer),
        )
        parts = Parts(
            pipeline=pipeline,
            marian=MarianMTModel(spec.marian),
            phi3=Phi3ForCausalLM(spec.phi3),
            clip=CLIPModel(spec.clip),
        )
    pipeline.set_progress_bar_config(disable=True)
    for module in (*pipeline.components.values(), parts.marian, parts.phi3, parts.clip):
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    _force_translation_length(parts.marian, spec)
    return parts


def _force_translation_length(model: MarianMTModel, spec: ModelSpec) -> None:
    # Random weights may end a line at once or never; a fixed length makes lines comparable.
    # Ids the borrowed tokenizer cannot decode are suppressed, so decoding works.
    config = model.generation_config
    config.min_new_tokens = spec.translation_tokens
    config.max_length = None
    known = len(spec.marian_tokenizer)
    config.suppress_tokens = list(range(known, spec.marian.vocab_size)) or None
    config.bad_words_ids = None
    config.decoder_start_token_id = spec.marian.decoder_start_token_id
    config.eos_token_id = spec.marian.eos_token_id
    config.pad_token_id = spec.marian.pad_token_id


def parameter_count(module: torch.nn.Module) -> int:
    """Number of parameters of a module.

    Args:
        module: any module.

    Returns:
        The count.
    """
    return sum(parameter.numel() for parameter in module.parameters())
