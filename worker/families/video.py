"""Text to video (Wan 2.1): a flow-matching transformer, UMT5, a causal video VAE."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from worker import tiny
from worker.families.base import BaseFamily


class Video(BaseFamily):
    name: ClassVar[str] = "video"
    # Wan's video VAE is run in float32 by its authors; it is small.
    vae_upcast_in_half: ClassVar[bool] = True

    def load(self, source: str, dtype: torch.dtype) -> Any:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            source, dtype=dtype
        )
        takes_frames = "num_frames" in inspect.signature(type(pipe).__call__).parameters
        if not hasattr(pipe, "vae_scale_factor_temporal") or not takes_frames:
            raise ValueError(
                f"{source} holds a {type(pipe).__name__}, not a text-to-video pipeline of the "
                "video family (Wan)"
            )
        return pipe

    def size_multiple(self, pipe: Any) -> int:
        patch = pipe.transformer.config.patch_size
        return max(16, int(pipe.vae_scale_factor_spatial) * int(patch[1]))

    def frame_multiple(self, pipe: Any) -> int:
        """Frames come in 4k+1: the VAE's temporal factor."""
        return int(pipe.vae_scale_factor_temporal)

    def vae_latents(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> Any:
        vae = pipe.vae
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device)
        std = torch.tensor(vae.config.latents_std).view(shape).to(latents.device)
        return latents * std + mean

    def tiny(self, seed: int) -> Any:
        """A Wan 2.1 text-to-video ``WanPipeline``: a UMT5 encoder, a 3D transformer over
        (1, 2, 2) patches, the causal video VAE (8x spatial, 4x temporal), and UniPC with flow
        sigmas as the real Wan 2.1 ships."""
        from diffusers import (
            AutoencoderKLWan,
            UniPCMultistepScheduler,
            WanPipeline,
            WanTransformer3DModel,
        )

        tokenizer = tiny.build_t5_tokenizer()
        torch.manual_seed(seed)
        text_encoder = tiny.t5_encoder(tokenizer, d_model=32, umt5=True)
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
        return WanPipeline(  # type: ignore[no-untyped-call]
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            scheduler=scheduler,
            transformer=transformer,
        )
