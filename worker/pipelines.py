"""Warm pipelines: loaded once per process, shared by every job, fresh state per job.

A `WarmModel` holds one text-to-image pipeline and the inpainting pipeline derived from it
with `from_pipe` (the same weights, no second copy). Each job gets its own scheduler and its
own seeded generators, so nothing one job sets leaks into the next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from jobs.catalog import ModelEntry
from jobs.protocol import JobType
from worker.imaging import Canvas, working_size
from worker.schedulers import make_scheduler

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]
"""Called after each denoising step with (steps done, total steps)."""


@dataclass(frozen=True)
class Device:
    torch_device: torch.device
    dtype: torch.dtype
    attention: str

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(requested: str, dtype_name: str) -> Device:
    """CUDA with half precision when there is a GPU; float32 on the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        dtype = torch.float16 if dtype_name == "auto" else _DTYPES[dtype_name]
    else:
        # Half precision on the CPU is slow or unsupported for many kernels.
        dtype = torch.float32 if dtype_name in ("auto", "float16") else _DTYPES[dtype_name]
    return Device(torch_device=device, dtype=dtype, attention="sdpa")


class WarmModel:
    def __init__(
        self, entry: ModelEntry, source: str | Path, device: Device, attention: str = "auto"
    ) -> None:
        from diffusers import (
            AutoPipelineForImage2Image,
            AutoPipelineForInpainting,
            AutoPipelineForText2Image,
        )

        started = time.perf_counter()
        self.entry = entry
        self.device = device
        base = AutoPipelineForText2Image.from_pretrained(str(source), dtype=device.dtype)
        base.set_progress_bar_config(disable=True)
        base.to(device.torch_device)
        self.attention = self._fast_path(base, attention)
        self.base = base
        self._scheduler_config = base.scheduler.config
        self.restyler = None
        if JobType.IMG2IMG in entry.tasks:
            self.restyler = AutoPipelineForImage2Image.from_pipe(base, dtype=device.dtype)
            self.restyler.set_progress_bar_config(disable=True)
        self.inpainter = None
        if entry.inpaints:
            # from_pipe casts the shared modules to `dtype`, float32 unless told: name
            # the loaded dtype so the base pipeline's weights stay as they are.
            self.inpainter = AutoPipelineForInpainting.from_pipe(base, dtype=device.dtype)
            self.inpainter.set_progress_bar_config(disable=True)
        self._warm_up()
        self.load_s = time.perf_counter() - started
        log.info(
            "model %s warm on %s (%s, %s attention) in %.2fs",
            entry.id,
            device.torch_device,
            str(device.dtype).removeprefix("torch."),
            self.attention,
            self.load_s,
        )

    def _fast_path(self, pipe: Any, attention: str) -> str:
        if not self.device.is_cuda:
            return "sdpa"
        pipe.unet.to(memory_format=torch.channels_last)
        if self.device.dtype == torch.float16 and hasattr(pipe, "upcast_vae"):
            # SDXL-class VAEs overflow in fp16 (black or NaN images); their pipelines decode
            # in fp32 when the VAE config asks for it.
            pipe.vae.config.force_upcast = True
        if attention in ("auto", "xformers"):
            try:
                pipe.enable_xformers_memory_efficient_attention()
                return "xformers"
            except Exception as exc:  # not installed, or no kernel for this GPU
                if attention == "xformers":
                    raise
                log.info("xformers unavailable (%s); using PyTorch SDPA", exc)
        return "sdpa"

    def _warm_up(self) -> None:
        # One tiny run so the first job does not pay for tokenizer and kernel start-up.
        generator = torch.Generator("cpu").manual_seed(0)
        with torch.inference_mode():
            self.base(
                prompt="warm up",
                num_inference_steps=1,
                width=64,
                height=64,
                generator=generator,
                output_type="latent",
            )

    def release(self) -> None:
        """Free what an aborted job left allocated on the GPU."""
        if self.device.is_cuda:
            import gc

            gc.collect()
            torch.cuda.empty_cache()

    # -- jobs ------------------------------------------------------------------------------

    def txt2img(
        self,
        params: Any,
        on_step: StepCallback,
        decode_fp32: bool = False,
        *,
        prompts: list[str] | None = None,
        negative_prompts: list[str] | None = None,
        seeds: list[int] | None = None,
    ) -> list[Image.Image]:
        """`prompts`, `negative_prompts` and `seeds` (one per image) replace the params'
        prompt, negative prompt and seeds: several jobs' images in one call."""
        pipe = self._for_job(self.base, params.scheduler)
        return self._call(
            pipe,
            params,
            on_step,
            decode_fp32,
            width=params.width,
            height=params.height,
            prompts=prompts,
            negative_prompts=negative_prompts,
            seeds=seeds,
        )

    def img2img(
        self, params: Any, image: Image.Image, on_step: StepCallback, decode_fp32: bool = False
    ) -> list[Image.Image]:
        """Restyle `image` (run at a size the VAE takes); outputs have the run's size."""
        if self.restyler is None:
            raise ValueError(f"model {self.entry.id} does not do img2img")
        pipe = self._for_job(self.restyler, params.scheduler)
        run_size = working_size(*image.size)
        if run_size != image.size:
            image = image.resize(run_size, Image.Resampling.LANCZOS)
        return self._call(pipe, params, on_step, decode_fp32, image=image, strength=params.strength)

    def inpaint(
        self, params: Any, canvas: Canvas, on_step: StepCallback, decode_fp32: bool = False
    ) -> list[Image.Image]:
        """Run the inpainting pipeline on a canvas (at a size the VAE takes); the caller
        composites the outputs back over the canvas."""
        if self.inpainter is None:
            raise ValueError(f"model {self.entry.id} cannot inpaint")
        pipe = self._for_job(self.inpainter, params.scheduler)
        width, height = canvas.image.size
        run_w, run_h = working_size(width, height)
        image, mask = canvas.image, canvas.mask
        if (run_w, run_h) != (width, height):
            image = image.resize((run_w, run_h), Image.Resampling.LANCZOS)
            mask = mask.resize((run_w, run_h), Image.Resampling.NEAREST)
        return self._call(
            pipe,
            params,
            on_step,
            decode_fp32,
            image=image,
            mask_image=mask,
            strength=params.strength,
            width=run_w,
            height=run_h,
        )

    def _for_job(self, pipe: Any, scheduler: str) -> Any:
        # A fresh scheduler per job: its timesteps and step index belong to this job alone.
        # Setting it on the shared pipeline is safe because a worker process runs one job at a
        # time, on one thread; the scheduler config is read from the loaded one, never changed.
        pipe.scheduler = make_scheduler(scheduler, self._scheduler_config)
        return pipe

    def _call(
        self,
        pipe: Any,
        params: Any,
        on_step: StepCallback,
        decode_fp32: bool = False,
        prompts: list[str] | None = None,
        negative_prompts: list[str] | None = None,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> list[Image.Image]:
        # CPU generators: the same seed gives the same starting noise on any device.
        seeds = seeds if seeds is not None else params.seeds()
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        if prompts is not None:
            # One prompt per image (several jobs in one call): one image per prompt.
            prompt: Any = prompts
            negative: Any = negative_prompts
            per_prompt = 1
        else:
            prompt, negative, per_prompt = params.prompt, params.negative_prompt or None, params.n

        def step_end(
            pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            on_step(step + 1, pipeline.num_timesteps)
            return tensors

        with torch.inference_mode():
            result = pipe(
                prompt=prompt,
                negative_prompt=negative,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance_scale,
                num_images_per_prompt=per_prompt,
                generator=generators,
                callback_on_step_end=step_end,
                output_type="latent" if decode_fp32 else "pil",
                **kwargs,
            )
            if decode_fp32:
                return self._decode_fp32(pipe, result.images)
        images: list[Image.Image] = result.images
        return images

    def _decode_fp32(self, pipe: Any, latents: Any) -> list[Image.Image]:
        """Decode with the VAE in float32: the cure for a half-precision VAE that overflowed
        into NaN (black) images."""
        vae = pipe.vae
        dtype = vae.dtype
        vae.to(torch.float32)
        try:
            latents = latents.to(torch.float32) / vae.config.scaling_factor
            decoded = vae.decode(latents, return_dict=False)[0]
        finally:
            vae.to(dtype)
        images: list[Image.Image] = pipe.image_processor.postprocess(decoded, output_type="pil")
        return images
