"""What a model family is to the worker: the `Family` protocol, and the defaults most share.

A warm model (`worker.image_model`, `worker.video_model`) runs every family the same way
and asks its family for what differs: how its pipelines load, which denoiser they hold, what
sizes they take, how a prompt reaches them, how their latents decode. diffusers gives each
family its own pipeline classes; these classes hold what the worker needs to know about
them, nothing else.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch
from PIL import Image

from jobs.families import FAMILY_RULES, FamilyRules


class Family(Protocol):
    """One model family (sd1, sdxl, sd3, flux, chroma, video), as the worker sees it."""

    name: ClassVar[str]
    """The catalogue's name for it (an entry's ``family``)."""
    channels_last: ClassVar[bool]
    """Its denoiser is a convolutional UNet, which runs faster in NHWC on CUDA."""
    vae_upcast_in_half: ClassVar[bool]
    """Its VAE is run in float32 while the rest runs in half precision (on CUDA)."""

    @property
    def token_limit(self) -> int | None:
        """Tokens of a prompt its pipelines read; None where the worker encodes prompts in
        chunks and lifts the limit (`encode_prompts`)."""
        ...

    @property
    def rules(self) -> FamilyRules:
        """Its tasks, schedulers and defaults, shared with the API (`jobs.catalog`)."""
        ...

    def load(self, source: str, dtype: torch.dtype) -> Any:
        """Its text-to-image (or text-to-video) pipeline from a diffusers folder or hub id."""
        ...

    def denoiser(self, pipe: Any) -> Any:
        """The UNet or transformer of one of its pipelines."""
        ...

    def tiny(self, seed: int) -> Any:
        """A tiny pipeline of the family with random weights (the same seed, the same
        weights): its real component layout, latent shape and VAE scale factor at a few
        megabytes, built offline from `worker.tiny`'s parts for tests and demos."""
        ...

    def size_multiple(self, pipe: Any) -> int:
        """What each side of an output must be a multiple of."""
        ...

    def text_kwargs(
        self, prompt: Any, negative: Any, max_sequence_length: int | None
    ) -> dict[str, Any]:
        """The prompt arguments of its pipelines' calls, from text."""
        ...

    def encode_prompts(
        self,
        pipe: Any,
        prompts: list[str],
        negatives: list[str | None],
        device: torch.device | str,
        *,
        guidance_scale: float,
        weighting: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The prompt arguments as embeddings, one prompt per batch row, uncut (only where
        `token_limit` is None); `weighting` reads A1111-style emphasis (`worker.prompts`)."""
        ...

    def img2img_images(self, image: Image.Image, count: int) -> Any:
        """The ``image`` argument of its img2img pipeline for `count` outputs of one image."""
        ...

    def vae_latents(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> Any:
        """The pipeline's output latents as its VAE decodes them (un-packed, un-shifted)."""
        ...


class BaseFamily:
    """The defaults most families share; each family's class overrides what differs."""

    name: ClassVar[str]
    channels_last: ClassVar[bool] = False
    vae_upcast_in_half: ClassVar[bool] = False
    negative_prompt: ClassVar[bool] = True
    """Its pipelines take a negative prompt."""

    @property
    def rules(self) -> FamilyRules:
        return FAMILY_RULES[self.name]

    @property
    def token_limit(self) -> int | None:
        return self.rules.max_sequence_length

    def load(self, source: str, dtype: torch.dtype) -> Any:
        from diffusers import AutoPipelineForText2Image

        return AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]
            source, dtype=dtype
        )

    def denoiser(self, pipe: Any) -> Any:
        return pipe.transformer

    def size_multiple(self, pipe: Any) -> int:
        return int(pipe.vae_scale_factor)

    def text_kwargs(
        self, prompt: Any, negative: Any, max_sequence_length: int | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"prompt": prompt}
        if self.negative_prompt:
            kwargs["negative_prompt"] = negative
        if max_sequence_length is not None:
            kwargs["max_sequence_length"] = max_sequence_length
        return kwargs

    def encode_prompts(
        self,
        pipe: Any,
        prompts: list[str],
        negatives: list[str | None],
        device: torch.device | str,
        *,
        guidance_scale: float,
        weighting: bool = False,
    ) -> dict[str, torch.Tensor]:
        raise ValueError(
            f"the {self.name} family's pipelines read prompts of up to {self.token_limit} "
            "tokens themselves; only the CLIP-only families encode them in chunks"
        )

    def img2img_images(self, image: Image.Image, count: int) -> Any:
        return image

    def vae_latents(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> Any:
        """Undo the pipeline's normalisation: an SDXL VAE's mean and std where its config has
        them, else the scaling factor and (SD3, Flux) the shift."""
        config = pipe.vae.config
        mean, std = config.get("latents_mean"), config.get("latents_std")
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            mean_t = torch.tensor(mean).view(shape).to(latents.device)
            std_t = torch.tensor(std).view(shape).to(latents.device)
            return latents * std_t / config.scaling_factor + mean_t
        shift = config.get("shift_factor") or 0.0
        return latents / config.scaling_factor + self._shift(pipe, shift)

    def _shift(self, pipe: Any, shift: float) -> float:
        return shift
