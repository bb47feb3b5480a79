"""Image models (sd1, sdxl, sd3, flux): one text-to-image pipeline, and the img2img and
inpainting pipelines derived from it with `from_pipe` (the same weights, no second copy).

Each job gets its own scheduler and its own seeded generators, so nothing one job sets leaks
into the next. What differs between the families is asked of the family's class
(`worker.families`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from jobs import resolved
from jobs.batching import batch_key
from jobs.catalog import ModelEntry
from jobs.protocol import (
    Img2ImgParams,
    InpaintParams,
    JobType,
    OutpaintParams,
    Txt2ImgParams,
)
from jobs.resolved import Sampling
from worker import prompts
from worker.adapters import UnknownAdapter, activate, load_adapters
from worker.imaging import Canvas
from worker.runtime import Device, Runtime
from worker.schedulers import make_scheduler
from worker.warm import StepCallback, WarmBase, accepts, round_up, step_end

log = logging.getLogger(__name__)


class WarmModel(WarmBase):
    """An image model (sd1, sdxl, sd3, flux): text-to-image, and img2img and inpainting
    pipelines derived from it with `from_pipe` (the same module objects)."""

    def __init__(
        self,
        entry: ModelEntry,
        source: str | Path,
        runtime: Runtime | Device,
        attention: str = "auto",
        adapters: Sequence[tuple[str, Path]] = (),
    ) -> None:
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        started = time.perf_counter()
        if entry.is_video:
            raise ValueError(f"model {entry.id} is a video model: load it with WarmVideoModel")
        self._setup(entry, runtime, attention)
        dtype = self.runtime.torch_dtype
        base = self.family.load(str(source), dtype)
        self._apply(base)
        self.vae_upcast = self.runtime.vae_upcast and bool(
            # SDXL's own VAE config asks for it; a VAE fine-tuned for float16 says it need not.
            base.vae.config.get("force_upcast", False)
        )
        self.base = base
        # Loaded once, on the modules every derived pipeline shares; switched per job.
        load_adapters(base, adapters)
        self.adapters = tuple(adapter_id for adapter_id, _ in adapters)
        self._chunked = self.family.token_limit is None
        self._scheduler_config = base.scheduler.config
        self._schedulers: dict[str, Any] = {}
        self._flow = entry.rules.flow_matching
        self.size_multiple = self.family.size_multiple(base)
        self.restyler = None
        if JobType.IMG2IMG in entry.tasks:
            # from_pipe casts the shared modules to `dtype`, float32 unless told: name
            # the loaded dtype so the base pipeline's weights stay as they are.
            self.restyler = AutoPipelineForImage2Image.from_pipe(base, dtype=dtype)
            self.restyler.set_progress_bar_config(disable=True)
        self.inpainter = None
        if entry.inpaints:
            self.inpainter = AutoPipelineForInpainting.from_pipe(base, dtype=dtype)
            self.inpainter.set_progress_bar_config(disable=True)
        self._warm_up()
        self.load_s = time.perf_counter() - started

    def _warm_up(self) -> None:
        # One tiny run so the first job does not pay for tokenizer and kernel start-up; with
        # torch.compile, at the native size, so that compiling happens now and not in a job.
        width, height = self.entry.native_size if self.runtime.compile else (64, 64)
        width, height = self._run_size(width, height)
        with torch.inference_mode():
            self.base(
                **self._text_kwargs("warm up", None),
                num_inference_steps=2 if self.runtime.compile else 1,
                width=width,
                height=height,
                generator=torch.Generator("cpu").manual_seed(0),
                output_type="latent",
            )

    def _run_size(self, width: int, height: int) -> tuple[int, int]:
        """The size a pipeline runs at: each side rounded up to what the model takes."""
        return round_up(width, self.size_multiple), round_up(height, self.size_multiple)

    # -- jobs ------------------------------------------------------------------------------

    def txt2img(
        self,
        params: Txt2ImgParams,
        on_step: StepCallback,
        decode_fp32: bool = False,
        *,
        prompts: list[str] | None = None,
        negative_prompts: list[str] | None = None,
        seeds: list[int] | None = None,
    ) -> list[Image.Image]:
        """`prompts`, `negative_prompts` and `seeds` (one per image) replace the params'
        prompt, negative prompt and seeds: several jobs' images in one call. Outputs have
        the params' size (a model that takes multiples of 16 runs larger and is resized)."""
        wanted = resolved.size(params)
        run = Sampling.of(params)
        pipe = self._for_job(self.base, run.scheduler)
        size = self._run_size(*wanted)
        images = self._call(
            pipe,
            run,
            on_step,
            decode_fp32,
            size=size,
            prompts=prompts,
            negative_prompts=negative_prompts,
            seeds=seeds,
        )
        if size != wanted:
            images = [image.resize(wanted, Image.Resampling.LANCZOS) for image in images]
        return images

    def img2img(
        self,
        params: Img2ImgParams,
        image: Image.Image,
        on_step: StepCallback,
        decode_fp32: bool = False,
    ) -> list[Image.Image]:
        """Restyle `image` (run at a size the model takes); outputs have the run's size."""
        if self.restyler is None:
            raise ValueError(f"model {self.entry.id} does not do img2img")
        run = Sampling.of(params)
        pipe = self._for_job(self.restyler, run.scheduler)
        size = self._run_size(*image.size)
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
        images = self.family.img2img_images(image, params.n)
        return self._call(
            pipe, run, on_step, decode_fp32, size=size, image=images, strength=params.strength
        )

    def inpaint(
        self,
        params: InpaintParams | OutpaintParams,
        canvas: Canvas,
        on_step: StepCallback,
        decode_fp32: bool = False,
    ) -> list[Image.Image]:
        """Run the inpainting pipeline on a canvas (at a size the model takes); the caller
        composites the outputs back over the canvas."""
        if self.inpainter is None:
            raise ValueError(f"model {self.entry.id} cannot inpaint")
        run = Sampling.of(params)
        pipe = self._for_job(self.inpainter, run.scheduler)
        size = self._run_size(*canvas.image.size)
        image, mask = canvas.image, canvas.mask
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
            mask = mask.resize(size, Image.Resampling.NEAREST)
        return self._call(
            pipe,
            run,
            on_step,
            decode_fp32,
            size=size,
            image=image,
            mask_image=mask,
            strength=params.strength,
        )

    def _for_job(self, pipe: Any, scheduler: str) -> Any:
        # A fresh scheduler per job: its timesteps and step index belong to this job alone.
        # Setting it on the shared pipeline is safe because a worker process runs one job at a
        # time, on one thread; the scheduler config is read from the loaded one, never changed.
        # Built from the config once per name, copied per job (a copy is ~5x cheaper).
        if scheduler not in self._schedulers:
            self._schedulers[scheduler] = make_scheduler(
                scheduler, self._scheduler_config, flow_matching=self._flow
            )
        pipe.scheduler = copy.deepcopy(self._schedulers[scheduler])
        return pipe

    def batch_key(self, params: Txt2ImgParams) -> tuple[Any, ...] | None:
        """What jobs must share to run in one call (see `jobs.batching`); for chunked
        prompts also the number of chunks, since padding a prompt to more chunks than it
        takes would change its images."""
        key = batch_key(params)
        if key is None or not self._chunked:
            return key
        texts = [params.prompt, params.negative_prompt or ""]
        return (*key, max(prompts.chunk_count(self.base, text) for text in texts))

    def _text_kwargs(self, prompt: Any, negative: Any) -> dict[str, Any]:
        """The prompt arguments of this family's pipelines, as text."""
        return self.family.text_kwargs(prompt, negative, self.entry.max_sequence_length)

    def _call(
        self,
        pipe: Any,
        run: Sampling,
        on_step: StepCallback,
        decode_fp32: bool = False,
        *,
        size: tuple[int, int],
        prompts: list[str] | None = None,
        negative_prompts: list[str] | None = None,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> list[Image.Image]:
        # CPU generators: the same seed gives the same starting noise on any device.
        seeds = seeds if seeds is not None else run.seeds()
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        if prompts is not None:
            # One prompt per image (several jobs in one call): one image per prompt.
            prompt: Any = prompts
            negative: Any = negative_prompts
            per_prompt = 1
        else:
            prompt, negative, per_prompt = run.prompt, run.negative_prompt or None, run.n
        width, height = size
        if accepts(pipe, "width"):
            # SD 1.x and SDXL img2img take the size of the image; the others are told it.
            kwargs.update(width=width, height=height)
        self._vae_mode(pipe.vae, width, height, len(generators))
        with torch.inference_mode():
            self._adapters_for(pipe, run)
            result = pipe(
                **self._prompt_kwargs(pipe, run, prompt, negative),
                num_inference_steps=run.steps,
                guidance_scale=run.guidance_scale,
                num_images_per_prompt=per_prompt,
                generator=generators,
                callback_on_step_end=step_end(on_step),
                output_type="latent" if decode_fp32 else "pil",
                **kwargs,
            )
            if decode_fp32:
                return self._decode_fp32(pipe, result.images, width, height)
        images: list[Image.Image] = result.images
        return images

    def _adapters_for(self, pipe: Any, run: Sampling) -> None:
        """Switch on exactly the job's adapters; none → the base model, bit for bit."""
        loras = [(lora.id, lora.scale) for lora in run.loras]
        if self.adapters:
            activate(pipe, loras)
        elif loras:
            raise UnknownAdapter(f"model {self.entry.id} has no adapters loaded here")

    def _prompt_kwargs(
        self, pipe: Any, run: Sampling, prompt: Any, negative: Any
    ) -> dict[str, Any]:
        """CLIP-only families get their prompts encoded here in chunks of 75 tokens, so a long
        prompt is not cut at 77 tokens; the others take the text (T5 reads long prompts)."""
        if not self._chunked:
            return self._text_kwargs(prompt, negative)
        rows = prompt if isinstance(prompt, list) else [prompt]
        negatives = negative if isinstance(negative, list) else [negative] * len(rows)
        return self.family.encode_prompts(
            pipe,
            rows,
            [text or None for text in negatives],
            self.device.torch_device,
            guidance_scale=run.guidance_scale,
        )

    def _decode_fp32(
        self, pipe: Any, latents: torch.Tensor, width: int, height: int
    ) -> list[Image.Image]:
        """Decode with the VAE in float32: the cure for a half-precision VAE that overflowed
        into NaN (black) images. The family undoes what its pipelines do to their latents
        (Flux packs them in 2x2 patches; SD3 and Flux shift them; an SDXL VAE may normalise
        them)."""
        vae = pipe.vae
        dtype = vae.dtype
        if dtype != torch.float32:
            vae.to(torch.float32)
        try:
            latents = self.family.vae_latents(pipe, latents.to(torch.float32), width, height)
            decoded = vae.decode(latents, return_dict=False)[0]
        finally:
            if dtype != torch.float32:
                vae.to(dtype)
        images: list[Image.Image] = pipe.image_processor.postprocess(decoded, output_type="pil")
        return images
