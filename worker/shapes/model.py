"""The parts of the shapes demo model: an SD 1.x pipeline small enough to train on a CPU.

A CLIP tokenizer written offline whose merges make every word of the scene set one token (any
other text still encodes, byte by byte), a small CLIP text encoder, an ``AutoencoderKL`` that
maps a 64x64 scene to a 16x16x4 latent (downsampling 4: at 8, a small shape would be one
latent pixel and its kind would not survive the round trip), and a
``UNet2DConditionModel`` with cross-attention at its two lower resolutions. Saved with
``save_pretrained`` it is an ordinary ``StableDiffusionPipeline`` folder: the worker loads it
like any SD 1.x checkpoint.
"""

from __future__ import annotations

from typing import Any

from worker import tiny
from worker.shapes.scenes import SIZE, VOCABULARY
from worker.tiny import BOS_TOKEN, EOS_TOKEN, MAX_LENGTH

LATENT_SIDE = 16
TEXT_WIDTH = 64
# The noise schedule the UNet is trained with, and that every scheduler of the saved pipeline
# reads from its config: linear betas suit a 16x16 latent better than SD's scaled-linear ones.
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "trailing",
}
SAVED_FOR_OTHER_SCHEDULERS = {"clip_sample": False, "set_alpha_to_one": False}
"""Written into the saved scheduler config for the schedulers a job may switch to: DDIM (and
its kin) built from a config without them clips the predicted sample to [-1, 1], which suits
pixels, not latents, and wrecks them."""


def word_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """BPE merges that build each word, left to right, into one ``word</w>`` token. Longer
    words' merges rank first, so that a shorter word's merge inside them (``ri`` of ``right``
    inside ``triangle``) cannot split them."""
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in sorted(words, key=lambda w: (-len(w), w)):
        symbols = [*word[:-1], word[-1] + "</w>"]
        built = symbols[0]
        for symbol in symbols[1:]:
            pair = (built, symbol)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            built += symbol
    return merges


def build_tokenizer(words: tuple[str, ...] = VOCABULARY) -> Any:
    tokenizer = tiny.build_tokenizer(word_merges(words))
    for word in words:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"{word!r} is not one token: {ids}")
    return tokenizer


def new_text_encoder(tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = tokenizer.get_vocab()
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=TEXT_WIDTH,
            intermediate_size=4 * TEXT_WIDTH,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=MAX_LENGTH,
            bos_token_id=vocab[BOS_TOKEN],
            eos_token_id=vocab[EOS_TOKEN],
            pad_token_id=vocab[EOS_TOKEN],
        )
    )


def new_vae() -> Any:
    """Three blocks, two 2x downsamplings: 64x64 RGB → 16x16x4."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SIZE,
    )


def new_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(  # type: ignore[no-untyped-call]
        sample_size=LATENT_SIDE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        # Full resolution only draws; the words meet the picture at 8x8, 4x4 and the middle.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def new_scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(**SCHEDULE)  # type: ignore[no-untyped-call]
    scheduler.register_to_config(**SAVED_FOR_OTHER_SCHEDULERS)  # type: ignore[attr-defined]
    return scheduler


def pipeline(vae: Any, text_encoder: Any, tokenizer: Any, unet: Any) -> Any:
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=new_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
