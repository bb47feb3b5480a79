"""Build tiny, randomly initialised pipelines of every model family entirely offline.

Each has the component layout, latent shape and VAE scale factor of a real checkpoint of its
family (SD 1.x, SDXL, SD3, Flux, Wan 2.1 text-to-video) but weighs a few megabytes, so the
service can be exercised end to end without downloading anything. Their images are noise.
The same seed always gives the same weights.

Usage: ``python -m worker.demo_model DIR [--family sd1|sdxl|sd3|flux|video] [--seed N] [--force]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, PreTrainedTokenizerBase

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MAX_LENGTH = 77

# A few BPE merges so that some common words become single tokens, like in the real vocab.
# Both halves of each merge must themselves be tokens (build_tokenizer checks this).
MERGES: tuple[tuple[str, str], ...] = (
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("o", "f</w>"),
    ("i", "n"),
    ("in", "g</w>"),
    ("o", "n</w>"),
    ("e", "r</w>"),
    ("a", "t</w>"),
    ("c", "at</w>"),
)


def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character, as GPT-2 / CLIP byte-level BPE does."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    # Control and whitespace bytes are shifted past 255 so that no symbol is invisible.
    shifted = (b for b in range(256) if b not in mapping)
    for offset, b in enumerate(shifted):
        mapping[b] = chr(256 + offset)
    return mapping


def build_vocab() -> dict[str, int]:
    """Return the toy CLIP vocabulary: bytes, end-of-word bytes, merged tokens, specials."""
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols)]
    for left, right in MERGES:
        merged = left + right
        if merged not in tokens:
            tokens.append(merged)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def build_tokenizer() -> CLIPTokenizer:
    """Write vocab.json / merges.txt to a temporary folder and load a CLIPTokenizer from them."""
    from transformers import CLIPTokenizer

    vocab = build_vocab()
    for left, right in MERGES:
        if left not in vocab or right not in vocab:
            raise ValueError(f"merge {left!r} {right!r} uses a token missing from the vocab")
    with tempfile.TemporaryDirectory(prefix="latentq-tok-") as tmp:
        vocab_file = Path(tmp, "vocab.json")
        merges_file = Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        lines = ["#version: 0.2", *(f"{left} {right}" for left, right in MERGES)]
        merges_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return CLIPTokenizer(
            str(vocab_file),
            str(merges_file),
            bos_token=BOS_TOKEN,
            eos_token=EOS_TOKEN,
            unk_token=EOS_TOKEN,
            pad_token=EOS_TOKEN,
            model_max_length=MAX_LENGTH,
        )


def build_sd1(out_dir: Path, *, seed: int = 0) -> Path:
    """Build a tiny SD-1.x ``StableDiffusionPipeline`` with random weights and save it.

    The same seed always yields the same weights. Returns ``out_dir``.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_LENGTH,
            bos_token_id=vocab[BOS_TOKEN],
            eos_token_id=vocab[EOS_TOKEN],
            pad_token_id=vocab[EOS_TOKEN],
        )
    )
    # diffusers' constructors are untyped (wrapped by register_to_config).
    unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        # diffusers reads this as the number of heads. Full-resolution self-attention over 64x64
        # latents dominates CPU time and scales with heads, not head width: 8 heads made a 512px
        # 20-step run ~4x slower than 2.
        attention_head_dim=2,
        norm_num_groups=32,
    )
    # Four blocks give three 2x downsamplings: the same scale factor (8) as the real SD VAE.
    vae = AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    scheduler = EulerDiscreteScheduler(  # type: ignore[no-untyped-call]
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, out_dir)


# -- shared parts of the tiny models -------------------------------------------------------

T5_PIECES_WORDS = ("the", "a", "an", "and", "of", "in", "on", "at", "with", "cat", "dog")


def build_t5_tokenizer() -> PreTrainedTokenizerBase:
    """A tiny Unigram (SentencePiece-style) T5 tokenizer: specials, single characters with and
    without the word-start marker, and a few whole words. Built from the pieces, no file."""
    import string

    from transformers import T5Tokenizer

    chars = [c for c in string.printable if not c.isspace()]
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁", -2.0)]
    pieces += [(c, -5.0) for c in chars] + [("▁" + c, -4.0) for c in chars]
    pieces += [("▁" + word, -1.0) for word in T5_PIECES_WORDS]
    tokenizer: PreTrainedTokenizerBase = T5Tokenizer(vocab=pieces, extra_ids=0)
    return tokenizer


def _clip_text_encoder(
    vocab: dict[str, int], *, with_projection: bool, projection_dim: int = 32
) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=projection_dim,
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[EOS_TOKEN],
    )
    if with_projection:
        return CLIPTextModelWithProjection(config)
    return CLIPTextModel(config)


def _t5_encoder(tokenizer: PreTrainedTokenizerBase, d_model: int, *, umt5: bool = False) -> Any:
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    fields = {
        "vocab_size": len(tokenizer),
        "d_model": d_model,
        "d_kv": 8,
        "d_ff": 37,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "feed_forward_proj": "gated-gelu",
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,
    }
    if umt5:
        return UMT5EncoderModel(UMT5Config(**fields))
    return T5EncoderModel(T5Config(**fields))


def _image_vae(latent_channels: int, **config: Any) -> Any:
    """An `AutoencoderKL` with four blocks: three 2x downsamplings, the scale factor (8) of
    every real latent-diffusion VAE."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        # Only sets the tile size of a tiled decode: that of the real VAEs.
        sample_size=512,
        **config,
    )


def _save(pipe: Any, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_sdxl(out_dir: Path, *, seed: int = 0) -> Path:
    """A tiny SDXL ``StableDiffusionXLPipeline``: two CLIP text encoders (the second with a
    projection), a UNet with SDXL's text-and-size conditioning and no attention at full
    latent resolution, the VAE with ``force_upcast`` as SDXL's."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    torch.manual_seed(seed)
    text_encoder = _clip_text_encoder(vocab, with_projection=False)
    text_encoder_2 = _clip_text_encoder(vocab, with_projection=True, projection_dim=32)
    unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
        sample_size=128,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        # The two encoders' hidden states side by side (32 + 32).
        cross_attention_dim=64,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        # Six size/crop numbers of 8 dims each, and the pooled projection of encoder 2 (32).
        projection_class_embeddings_input_dim=6 * 8 + 32,
        norm_num_groups=32,
    )
    vae = _image_vae(4, scaling_factor=0.13025, force_upcast=True)
    scheduler = EulerDiscreteScheduler(  # type: ignore[no-untyped-call]
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=build_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    return _save(pipe, out_dir)


def build_sd3(out_dir: Path, *, seed: int = 0) -> Path:
    """A tiny SD3 ``StableDiffusion3Pipeline``: two CLIP encoders with projections and a T5
    encoder feeding an MMDiT, a 16-channel VAE with SD3's scale and shift, flow matching."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    t5_tokenizer = build_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = _clip_text_encoder(vocab, with_projection=True, projection_dim=32)
    text_encoder_2 = _clip_text_encoder(vocab, with_projection=True, projection_dim=32)
    # The CLIP hidden states (32 + 32) are padded to the T5 width: T5 is at least as wide.
    text_encoder_3 = _t5_encoder(t5_tokenizer, d_model=64)
    transformer = SD3Transformer2DModel(  # type: ignore[no-untyped-call]
        sample_size=64,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,  # the two CLIP projections side by side
        out_channels=16,
        # Positions for latents up to 256 per side (2048 pixels): any size a job may ask for.
        pos_embed_max_size=128,
    )
    vae = _image_vae(
        16,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
        force_upcast=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)  # type: ignore[no-untyped-call]
    pipe = StableDiffusion3Pipeline(  # type: ignore[no-untyped-call]
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=build_tokenizer(),
        text_encoder_3=text_encoder_3,
        tokenizer_3=t5_tokenizer,
    )
    return _save(pipe, out_dir)


def build_flux(out_dir: Path, *, seed: int = 0) -> Path:
    """A tiny Flux ``FluxPipeline`` (dev-like: guidance embedded, dynamic shift): a CLIP and a
    T5 encoder, one double and one single stream block over 2x2-packed 16-channel latents."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    t5_tokenizer = build_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = _clip_text_encoder(vocab, with_projection=False)
    text_encoder_2 = _t5_encoder(t5_tokenizer, d_model=32)
    transformer = FluxTransformer2DModel(  # type: ignore[no-untyped-call]
        patch_size=1,
        in_channels=4 * 16,  # 2x2 patches of the VAE's 16 channels
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # T5 width
        pooled_projection_dim=32,  # CLIP width
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
    )
    vae = _image_vae(
        16,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        force_upcast=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(  # type: ignore[no-untyped-call]
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(  # type: ignore[no-untyped-call]
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    return _save(pipe, out_dir)


def build_video(out_dir: Path, *, seed: int = 0) -> Path:
    """A tiny Wan 2.1 text-to-video ``WanPipeline``: a UMT5 encoder, a 3D transformer over
    (1, 2, 2) patches, the causal video VAE (8x spatial, 4x temporal), and UniPC with flow
    sigmas as the real Wan 2.1 ships."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    tokenizer = build_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = _t5_encoder(tokenizer, d_model=32, umt5=True)
    transformer = WanTransformer3DModel(  # type: ignore[no-untyped-call]
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
    )
    vae = AutoencoderKLWan(  # type: ignore[no-untyped-call]
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    scheduler = UniPCMultistepScheduler(  # type: ignore[no-untyped-call]
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=3.0,
    )
    pipe = WanPipeline(  # type: ignore[no-untyped-call]
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
    )
    return _save(pipe, out_dir)


BUILDERS: dict[str, Callable[..., Path]] = {
    "sd1": build_sd1,
    "sdxl": build_sdxl,
    "sd3": build_sd3,
    "flux": build_flux,
    "video": build_video,
}


def build(family: str, out_dir: Path, *, seed: int = 0) -> Path:
    """Build the tiny model of ``family`` into ``out_dir`` (diffusers format) and return it."""
    try:
        builder = BUILDERS[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(BUILDERS)}") from None
    return builder(Path(out_dir), seed=seed)


def dir_size_mb(path: Path) -> float:
    """Total size of the files under ``path`` in megabytes (10**6 bytes)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point: build a tiny pipeline into DIR unless one is already there."""
    parser = argparse.ArgumentParser(
        prog="python -m worker.demo_model",
        description="Build a tiny random-weight pipeline for offline tests and demos.",
    )
    parser.add_argument("dir", type=Path, help="output folder")
    parser.add_argument(
        "--family", choices=tuple(BUILDERS), default="sd1", help="model family (default: sd1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if DIR has a model")
    args = parser.parse_args(argv)

    out_dir: Path = args.dir
    if (out_dir / "model_index.json").exists() and not args.force:
        print(f"already there: {out_dir} ({dir_size_mb(out_dir):.2f} MB)")
        return
    build(args.family, out_dir, seed=args.seed)
    print(f"built: {out_dir} ({dir_size_mb(out_dir):.2f} MB)")


if __name__ == "__main__":
    main()
