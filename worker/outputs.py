"""What a job makes, and where it goes: the pipeline call for the job's type (through the
fault handling of `worker.faults`), then its images or videos encoded and stored under keys
derived from the job id, so that a job that runs twice writes them once.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from PIL import Image

from jobs.errors import FailureCode
from jobs.protocol import (
    AnyParams,
    ImageParams,
    Img2ImgParams,
    InpaintParams,
    OutpaintParams,
    OutputFormat,
    Txt2ImgParams,
    Txt2VideoParams,
)
from jobs.records import JobRecord, StoredImage, UnreadableParams
from jobs.storage import Storage, job_key
from worker.faults import JobFailed, is_blank, run_with_fault_handling
from worker.imaging import composite, encode, inpaint_canvas, outpaint_canvas
from worker.video import MP4_CONTENT_TYPE, encode_mp4, encode_webp

if TYPE_CHECKING:  # the warm models import torch; this module does not need it to load
    from worker.image_model import WarmModel
    from worker.video_model import WarmVideoModel

StepCallback = Callable[[int, int], None]


def produce(
    record: JobRecord,
    model: WarmModel | WarmVideoModel | None,
    storage: Storage,
    on_step: StepCallback,
    renew: Callable[[], None],
    generated: list[Image.Image] | None = None,
) -> list[StoredImage]:
    """Run the job on `model` (None: this worker does not hold it), or take the images a
    batched call `generated` for it, and store the results. `renew` keeps the job's lease
    between phases that have no steps (decoding, encoding, storing)."""
    params = record.params
    if isinstance(params, UnreadableParams):
        raise JobFailed(
            FailureCode.INVALID_INPUT, f"the job's parameters are invalid: {params.problem}"
        )
    if model is None:
        raise JobFailed(
            FailureCode.MODEL_UNAVAILABLE, f"this worker does not hold model {record.model}"
        )
    if generated is not None:
        renew()
        return _store(storage, record, cast(ImageParams, params), generated, renew)
    if isinstance(params, Txt2VideoParams):
        videos = _generate_videos(params, model, on_step)
        renew()
        return _store_videos(storage, record, params, videos, renew)
    outputs = _generate(storage, record, params, model, on_step)
    renew()
    return _store(storage, record, params, outputs, renew)


def _generate_videos(
    params: Txt2VideoParams, model: WarmModel | WarmVideoModel, on_step: StepCallback
) -> list[list[Image.Image]]:
    if not hasattr(model, "txt2video"):
        raise JobFailed(FailureCode.INVALID_INPUT, f"model {params.model} does not make videos")

    def run(part: Txt2VideoParams, decode_fp32: bool) -> list[list[Image.Image]]:
        videos: list[list[Image.Image]] = model.txt2video(part, on_step, decode_fp32=decode_fp32)
        return videos

    return run_with_fault_handling(model, params, run, is_bad=_all_blank)


def _all_blank(frames: list[Image.Image]) -> bool:
    return all(is_blank(frame) for frame in frames)


def _generate(
    storage: Storage,
    record: JobRecord,
    params: ImageParams,
    model: WarmModel | WarmVideoModel,
    on_step: StepCallback,
) -> list[Image.Image]:
    if not hasattr(model, "txt2img"):
        raise JobFailed(FailureCode.INVALID_INPUT, f"model {params.model} does not make images")
    maker = cast("WarmModel", model)  # what the check above made sure of
    canvas = None
    source = None
    if isinstance(params, Img2ImgParams):
        source = _input(storage, record, "image", "RGB")
        restyle_from = source

        def restyle(part: Img2ImgParams, decode_fp32: bool) -> list[Image.Image]:
            return maker.img2img(part, restyle_from, on_step, decode_fp32=decode_fp32)

        outputs = run_with_fault_handling(model, params, restyle)
    elif isinstance(params, InpaintParams | OutpaintParams):
        image = _input(storage, record, "image", "RGB")
        if isinstance(params, InpaintParams):
            mask = _input(storage, record, "mask", "L")
            if mask.size != image.size:
                raise JobFailed(FailureCode.INVALID_INPUT, "mask and image differ in size")
            high = mask.getextrema()[1]  # the brightest value of an "L" image
            if not isinstance(high, int) or high < 128:
                raise JobFailed(FailureCode.INVALID_INPUT, "the mask is black: nothing to repaint")
            canvas = inpaint_canvas(image, mask, params.mask_blur)
        else:
            canvas = outpaint_canvas(image, params.outpaint, params.mask_blur)
        paint_on = canvas

        def repaint(part: InpaintParams | OutpaintParams, decode_fp32: bool) -> list[Image.Image]:
            return maker.inpaint(part, paint_on, on_step, decode_fp32=decode_fp32)

        outputs = run_with_fault_handling(model, params, repaint)
    else:

        def draw(part: Txt2ImgParams, decode_fp32: bool) -> list[Image.Image]:
            return maker.txt2img(part, on_step, decode_fp32=decode_fp32)

        outputs = run_with_fault_handling(model, params, draw)
    if canvas is not None:
        outputs = [composite(out, canvas) for out in outputs]
    elif source is not None:
        # Back to the input's own size when the run needed a multiple of 8.
        outputs = [
            out if out.size == source.size else out.resize(source.size, Image.Resampling.LANCZOS)
            for out in outputs
        ]
    return outputs


def _input(storage: Storage, record: JobRecord, name: str, mode: str) -> Image.Image:
    key = record.inputs.get(name)
    if key is None:
        raise JobFailed(FailureCode.INVALID_INPUT, f"the job has no {name}")
    try:
        data = storage.get(key)
    except Exception:
        raise JobFailed(
            FailureCode.INVALID_INPUT, f"the job's {name} is no longer stored"
        ) from None
    return Image.open(io.BytesIO(data)).convert(mode)


def _metadata(params: AnyParams, record: JobRecord, seed: int, index: int) -> dict[str, Any]:
    return {
        **params.model_dump(mode="json", exclude={"priority", "n", "webhook", "webhook_events"}),
        "seed": seed,
        "job_id": record.id,
        "index": index,
    }


def _store_videos(
    storage: Storage,
    record: JobRecord,
    params: Txt2VideoParams,
    videos: list[list[Image.Image]],
    renew: Callable[[], None],
) -> list[StoredImage]:
    fps = params.fps or 8
    stored = []
    for index, (frames, seed) in enumerate(zip(videos, params.seeds(), strict=True)):
        if index:
            renew()
        key = job_key(record.owner, record.id, f"{index}.mp4")
        webp_key = job_key(record.owner, record.id, f"{index}.webp")
        storage.put(key, encode_mp4(frames, fps))
        storage.put(webp_key, encode_webp(frames, fps))
        width, height = frames[0].size
        stored.append(
            StoredImage(
                key=key,
                width=width,
                height=height,
                seed=seed,
                content_type=MP4_CONTENT_TYPE,
                num_frames=len(frames),
                fps=fps,
                webp_key=webp_key,
            )
        )
    return stored


def _store(
    storage: Storage,
    record: JobRecord,
    params: ImageParams,
    outputs: list[Image.Image],
    renew: Callable[[], None],
) -> list[StoredImage]:
    fmt = OutputFormat(params.output_format)
    stored = []
    for index, (image, seed) in enumerate(zip(outputs, params.seeds(), strict=True)):
        if index:
            renew()
        metadata = _metadata(params, record, seed, index)
        key = job_key(record.owner, record.id, f"{index}.{fmt.extension}")
        storage.put(key, encode(image, fmt, metadata))
        stored.append(
            StoredImage(
                key=key,
                width=image.width,
                height=image.height,
                seed=seed,
                content_type=fmt.content_type,
            )
        )
    return stored
