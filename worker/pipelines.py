"""Warm pipelines: loaded once per process, shared by every job, fresh state per job.

`load_model` gives the class that fits a catalogue entry's family: a `WarmModel` for the
image families (sd1, sdxl, sd3, flux) holds one text-to-image pipeline and the img2img and
inpainting pipelines derived from it with `from_pipe` (the same weights, no second copy); a
`WarmVideoModel` holds a text-to-video pipeline (Wan). Each job gets its own scheduler and its
own seeded generators, so nothing one job sets leaks into the next.

Both run every family the same way and ask the family's class (`worker.families`) for what
differs. How a model runs — device, dtype, attention, compile — is `worker.runtime`'s choice,
applied here and reported by each model's `config`.
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from jobs.batching import batch_key
from jobs.catalog import ModelEntry
from jobs.protocol import JobType
from worker import prompts
from worker.adapters import UnknownAdapter, activate, load_adapters
from worker.families import Family, family_of
from worker.families.video import Video
from worker.imaging import Canvas
from worker.runtime import (
    Device,
    Runtime,
    choose_runtime,
    resolve_device,
    xformers_importable,
)
from worker.schedulers import make_scheduler
from worker.settings import VAE_TILING_PIXELS_DEFAULT

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]
"""Called after each denoising step with (steps done, total steps)."""


def load_model(
    entry: ModelEntry,
    source: str | Path,
    device: str = "auto",
    *,
    attention: str = "auto",
    compile: bool = False,
    vae_tiling_pixels: int = VAE_TILING_PIXELS_DEFAULT,
    adapters: Sequence[tuple[str, Path]] = (),
) -> WarmModel | WarmVideoModel:
    """Load `entry` from `source` (a diffusers folder or hub id) into the class of its family,
    with the LoRA `adapters` (id, file) its jobs may switch on."""
    resolved = resolve_device(device)
    runtime = choose_runtime(
        entry.family,
        resolved,
        entry.dtype,
        attention=attention,
        xformers_available=resolved.startswith("cuda") and xformers_importable(),
        compile=compile,
        vae_tiling_pixels=vae_tiling_pixels,
    )
    if entry.is_video:
        return WarmVideoModel(entry, source, runtime)
    return WarmModel(entry, source, runtime, adapters=adapters)


# -- what every warm model shares ----------------------------------------------------------


class _Warm:
    """The runtime, applied to a loaded pipeline, and what the worker reports about it."""

    entry: ModelEntry
    family: Family
    runtime: Runtime
    device: Device
    attention: str
    vae_upcast: bool
    load_s: float

    def _setup(self, entry: ModelEntry, runtime: Runtime | Device, attention: str) -> None:
        self.entry = entry
        self.family = family_of(entry.family)
        if isinstance(runtime, Device):
            runtime = choose_runtime(
                entry.family,
                str(runtime.torch_device),
                str(runtime.dtype).removeprefix("torch."),
                attention=attention,
                xformers_available=runtime.is_cuda and xformers_importable(),
            )
        self.runtime = runtime

    def _apply(self, pipe: Any) -> None:
        """Move `pipe` to the device and apply the runtime's choices to its modules."""
        runtime = self.runtime
        pipe.set_progress_bar_config(disable=True)
        pipe.to(torch.device(runtime.device))
        denoiser = self.family.denoiser(pipe)
        if runtime.channels_last:
            denoiser.to(memory_format=torch.channels_last)
        self.attention = "sdpa"
        if runtime.attention == "xformers":
            # The choice was made before this call (diffusers raises rather than degrade);
            # a GPU without a kernel for it can still refuse here.
            try:
                pipe.enable_xformers_memory_efficient_attention()
                self.attention = "xformers"
            except Exception as exc:
                log.warning("xformers failed (%s); using PyTorch SDPA", exc)
        if runtime.compile:
            # In place: the pipelines derived with from_pipe share this very module.
            denoiser.compile()
        self.device = Device(torch.device(runtime.device), runtime.torch_dtype, self.attention)

    def _vae_mode(self, vae: Any, width: int, height: int, count: int) -> None:
        # Set per call on the shared VAE: a worker runs one job at a time.
        limit = self.runtime.vae_tiling_pixels
        big = bool(limit) and width * height > limit
        many = bool(limit) and count > 1 and width * height * count > limit
        if big:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        if many:
            vae.enable_slicing()
        else:
            vae.disable_slicing()

    @property
    def config(self) -> dict[str, Any]:
        """What this model runs with, as applied (the worker logs it at start)."""
        return {
            **asdict(self.runtime),
            "adapters": list(getattr(self, "adapters", ())),
            "attention": self.attention,
            "vae_upcast": self.vae_upcast,
            "load_s": round(self.load_s, 3),
        }

    def release(self) -> None:
        """Free what an aborted job left allocated on the GPU."""
        if self.device.is_cuda:
            import gc

            gc.collect()
            torch.cuda.empty_cache()


_CALL_PARAMETERS: dict[type, frozenset[str]] = {}
"""Parameters of each pipeline class's `__call__`, read once rather than on every job."""


def _accepts(pipe: Any, name: str) -> bool:
    cls = type(pipe)
    if cls not in _CALL_PARAMETERS:
        _CALL_PARAMETERS[cls] = frozenset(inspect.signature(cls.__call__).parameters)
    return name in _CALL_PARAMETERS[cls]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _step_end(on_step: StepCallback) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    def step_end(
        pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        on_step(step + 1, pipeline.num_timesteps)
        return tensors

    return step_end


# -- image models ---------------------------------------------------------------------------


class WarmModel(_Warm):
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
        return _round_up(width, self.size_multiple), _round_up(height, self.size_multiple)

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
        prompt, negative prompt and seeds: several jobs' images in one call. Outputs have
        the params' size (a model that takes multiples of 16 runs larger and is resized)."""
        pipe = self._for_job(self.base, params.scheduler)
        size = self._run_size(params.width, params.height)
        images = self._call(
            pipe,
            params,
            on_step,
            decode_fp32,
            size=size,
            prompts=prompts,
            negative_prompts=negative_prompts,
            seeds=seeds,
        )
        wanted = (params.width, params.height)
        if size != wanted:
            images = [image.resize(wanted, Image.Resampling.LANCZOS) for image in images]
        return images

    def img2img(
        self, params: Any, image: Image.Image, on_step: StepCallback, decode_fp32: bool = False
    ) -> list[Image.Image]:
        """Restyle `image` (run at a size the model takes); outputs have the run's size."""
        if self.restyler is None:
            raise ValueError(f"model {self.entry.id} does not do img2img")
        pipe = self._for_job(self.restyler, params.scheduler)
        size = self._run_size(*image.size)
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
        images = self.family.img2img_images(image, params.n)
        return self._call(
            pipe, params, on_step, decode_fp32, size=size, image=images, strength=params.strength
        )

    def inpaint(
        self, params: Any, canvas: Canvas, on_step: StepCallback, decode_fp32: bool = False
    ) -> list[Image.Image]:
        """Run the inpainting pipeline on a canvas (at a size the model takes); the caller
        composites the outputs back over the canvas."""
        if self.inpainter is None:
            raise ValueError(f"model {self.entry.id} cannot inpaint")
        pipe = self._for_job(self.inpainter, params.scheduler)
        size = self._run_size(*canvas.image.size)
        image, mask = canvas.image, canvas.mask
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
            mask = mask.resize(size, Image.Resampling.NEAREST)
        return self._call(
            pipe,
            params,
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

    def batch_key(self, params: Any) -> tuple[Any, ...] | None:
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
        params: Any,
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
        seeds = seeds if seeds is not None else params.seeds()
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        if prompts is not None:
            # One prompt per image (several jobs in one call): one image per prompt.
            prompt: Any = prompts
            negative: Any = negative_prompts
            per_prompt = 1
        else:
            prompt, negative, per_prompt = params.prompt, params.negative_prompt or None, params.n
        width, height = size
        if _accepts(pipe, "width"):
            # SD 1.x and SDXL img2img take the size of the image; the others are told it.
            kwargs.update(width=width, height=height)
        self._vae_mode(pipe.vae, width, height, len(generators))
        with torch.inference_mode():
            self._adapters_for(pipe, params)
            result = pipe(
                **self._prompt_kwargs(pipe, params, prompt, negative),
                num_inference_steps=params.steps,
                guidance_scale=params.guidance_scale,
                num_images_per_prompt=per_prompt,
                generator=generators,
                callback_on_step_end=_step_end(on_step),
                output_type="latent" if decode_fp32 else "pil",
                **kwargs,
            )
            if decode_fp32:
                return self._decode_fp32(pipe, result.images, width, height)
        images: list[Image.Image] = result.images
        return images

    def _adapters_for(self, pipe: Any, params: Any) -> None:
        """Switch on exactly the job's adapters; none → the base model, bit for bit."""
        loras = [(lora.id, lora.scale) for lora in getattr(params, "loras", ())]
        if self.adapters:
            activate(pipe, loras)
        elif loras:
            raise UnknownAdapter(f"model {self.entry.id} has no adapters loaded here")

    def _prompt_kwargs(self, pipe: Any, params: Any, prompt: Any, negative: Any) -> dict[str, Any]:
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
            guidance_scale=params.guidance_scale,
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


# -- video models ---------------------------------------------------------------------------


class WarmVideoModel(_Warm):
    """A text-to-video model (Wan 2.1): `txt2video` gives one list of frames per video."""

    def __init__(
        self,
        entry: ModelEntry,
        source: str | Path,
        runtime: Runtime | Device,
        attention: str = "auto",
    ) -> None:
        started = time.perf_counter()
        self._setup(entry, runtime, attention)
        if not isinstance(self.family, Video):
            raise ValueError(f"model {entry.id} is not a video model: load it with WarmModel")
        self.video = self.family
        try:
            pipe = self.video.load(str(source), self.runtime.torch_dtype)
        except ValueError as exc:
            raise ValueError(f"model {entry.id}: {exc}") from exc
        self._apply(pipe)
        self.vae_upcast = self.runtime.vae_upcast
        if self.vae_upcast:
            # Wan's causal video VAE is run in float32 by its authors; it is small.
            pipe.vae.to(torch.float32)
        self.pipe = pipe
        self._scheduler_config = pipe.scheduler.config
        self.frame_multiple = self.video.frame_multiple(pipe)
        self.size_multiple = self.video.size_multiple(pipe)
        self._warm_up()
        self.load_s = time.perf_counter() - started

    def _warm_up(self) -> None:
        if self.runtime.compile:
            width, height = self._run_size(*self.entry.native_size)
            frames, steps = self.run_frames(self.entry.default_frames), 2
        else:
            width, height, frames, steps = 64, 64, 1, 1
        with torch.inference_mode():
            self.pipe(
                **self._text_kwargs("warm up", None),
                num_inference_steps=steps,
                width=width,
                height=height,
                num_frames=frames,
                generator=torch.Generator("cpu").manual_seed(0),
                output_type="latent",
            )

    def run_frames(self, frames: int) -> int:
        """The frame count the pipeline runs for `frames`: the next 4k+1 (the VAE's temporal
        factor); the extra frames are dropped."""
        step = self.frame_multiple
        return _round_up(max(frames - 1, 0), step) + 1

    def _run_size(self, width: int, height: int) -> tuple[int, int]:
        return _round_up(width, self.size_multiple), _round_up(height, self.size_multiple)

    def _text_kwargs(self, prompt: Any, negative: Any) -> dict[str, Any]:
        return self.family.text_kwargs(prompt, negative, self.entry.max_sequence_length)

    def txt2video(
        self, params: Any, on_step: StepCallback, decode_fp32: bool = False
    ) -> list[list[Image.Image]]:
        """`params.n` videos of `params.num_frames` frames at the params' size, video i from
        seed `params.seeds()[i]`."""
        self.pipe.scheduler = make_scheduler(
            params.scheduler, self._scheduler_config, flow_matching=True
        )
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in params.seeds()]
        width, height = self._run_size(params.width, params.height)
        frames = self.run_frames(params.num_frames)
        self._vae_mode(self.pipe.vae, width, height, len(generators))
        with torch.inference_mode():
            result = self.pipe(
                **self._text_kwargs(params.prompt, params.negative_prompt or None),
                num_inference_steps=params.steps,
                guidance_scale=params.guidance_scale,
                num_videos_per_prompt=params.n,
                width=width,
                height=height,
                num_frames=frames,
                generator=generators,
                callback_on_step_end=_step_end(on_step),
                output_type="latent" if decode_fp32 else "pil",
            )
            videos: list[list[Image.Image]] = (
                self._decode_fp32(result.frames, width, height) if decode_fp32 else result.frames
            )
        wanted = (params.width, params.height)
        return [
            [
                frame if frame.size == wanted else frame.resize(wanted, Image.Resampling.LANCZOS)
                for frame in video[: params.num_frames]
            ]
            for video in videos
        ]

    def _decode_fp32(
        self, latents: torch.Tensor, width: int, height: int
    ) -> list[list[Image.Image]]:
        """Decode with the VAE in float32 (as the pipeline does, latents un-normalised)."""
        vae = self.pipe.vae
        dtype = vae.dtype
        if dtype != torch.float32:
            vae.to(torch.float32)
        try:
            latents = self.video.vae_latents(self.pipe, latents.to(torch.float32), width, height)
            decoded = vae.decode(latents, return_dict=False)[0]
        finally:
            if dtype != torch.float32:
                vae.to(dtype)
        videos: list[list[Image.Image]] = self.pipe.video_processor.postprocess_video(
            decoded, output_type="pil"
        )
        return videos
