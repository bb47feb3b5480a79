"""The wire contract: job types, statuses and the parameters of each job type (`docs/api.md`).

Image data (`image`, `mask`) never enters these models: the API stores input images and the
job record only names them, so nothing large goes into Redis.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from jobs import defaults


class JobType(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    OUTPAINT = "outpaint"
    TXT2VIDEO = "txt2video"

    @property
    def needs_image(self) -> bool:
        return self not in (JobType.TXT2IMG, JobType.TXT2VIDEO)

    @property
    def makes_video(self) -> bool:
        return self is JobType.TXT2VIDEO

    @property
    def needs_mask(self) -> bool:
        return self is JobType.INPAINT


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class OutputFormat(StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def content_type(self) -> str:
        return f"image/{self.value}"

    @property
    def extension(self) -> str:
        return "jpg" if self is OutputFormat.JPEG else self.value


Seed = Annotated[int, Field(ge=0, le=defaults.SEED_MAX)]
WebhookEvent = Literal["start", "progress", "completed"]


class _Strict(BaseModel):
    # Unknown fields are refused so that a typo ("step") is an error, not a silent default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Padding(_Strict):
    """Pixels to add on each side of an outpaint canvas."""

    left: int = Field(default=0, ge=0, le=defaults.SIZE_MAX)
    right: int = Field(default=0, ge=0, le=defaults.SIZE_MAX)
    top: int = Field(default=0, ge=0, le=defaults.SIZE_MAX)
    bottom: int = Field(default=0, ge=0, le=defaults.SIZE_MAX)

    @model_validator(mode="after")
    def _some_padding(self) -> Padding:
        if not (self.left or self.right or self.top or self.bottom):
            raise ValueError("at least one of left, right, top, bottom must be greater than 0")
        return self


class LoraRef(_Strict):
    """A LoRA adapter from the catalogue, applied to this job only, at `scale`."""

    id: str = Field(min_length=1, max_length=128)
    scale: float = Field(default=1.0, ge=-defaults.LORA_SCALE_MAX, le=defaults.LORA_SCALE_MAX)


class JobParams(_Strict):
    """Fields every job type takes. After `app.service.JobService._resolve` every optional
    field holds a value."""

    type: JobType
    model: str | None = Field(default=None, min_length=1, max_length=128)
    prompt: str = Field(max_length=defaults.PROMPT_MAX_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=defaults.PROMPT_MAX_CHARS)
    steps: int | None = Field(default=None, ge=1, le=defaults.STEPS_MAX)
    guidance_scale: float | None = Field(default=None, ge=0, le=defaults.GUIDANCE_MAX)
    scheduler: str | None = Field(default=None, min_length=1, max_length=64)
    seed: Seed | None = None
    n: int = Field(default=1, ge=1, le=defaults.N_MAX)
    loras: tuple[LoraRef, ...] = Field(default=(), max_length=defaults.LORAS_MAX)
    """Adapters for this job; the next job without them gets the base model exactly."""
    priority: Priority = Priority.NORMAL
    webhook: str | None = Field(default=None, min_length=8, max_length=2048)
    """An http(s) URL that gets signed POSTs about this job (see `jobs.webhooks`)."""
    webhook_events: tuple[WebhookEvent, ...] | None = None
    """Which of `start`, `progress`, `completed` to send; default `completed`."""

    @field_validator("prompt", mode="after")
    @classmethod
    def _trimmed_prompt(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("prompt must hold at least one non-space character")
        return value

    @field_validator("loras", mode="after")
    @classmethod
    def _distinct_loras(cls, value: tuple[LoraRef, ...]) -> tuple[LoraRef, ...]:
        ids = [lora.id for lora in value]
        if len(set(ids)) != len(ids):
            raise ValueError("each adapter may be named once")
        return value

    @model_validator(mode="after")
    def _webhook_events_need_a_webhook(self) -> JobParams:
        if self.webhook_events is not None and self.webhook is None:
            raise ValueError("webhook_events needs a webhook URL")
        return self

    @field_validator("negative_prompt", mode="after")
    @classmethod
    def _trimmed_negative(cls, value: str | None) -> str | None:
        return value.strip() if value is not None else None

    def seeds(self) -> list[int]:
        """The seed of each image: consecutive from the job's seed."""
        assert self.seed is not None, "resolve() the params first"
        return consecutive_seeds(self.seed, self.n)


def consecutive_seeds(seed: int, n: int) -> list[int]:
    """`n` seeds from `seed` on, wrapping past the largest."""
    return [(seed + i) % (defaults.SEED_MAX + 1) for i in range(n)]


def _multiple_of_8(value: int | None) -> int | None:
    if value is not None and value % defaults.SIZE_MULTIPLE:
        raise ValueError(f"must be a multiple of {defaults.SIZE_MULTIPLE}")
    return value


class _ImageJob(JobParams):
    """Jobs whose results are still images."""

    output_format: OutputFormat = OutputFormat.PNG


class Txt2ImgParams(_ImageJob):
    type: Literal[JobType.TXT2IMG] = JobType.TXT2IMG
    width: int | None = Field(default=None, ge=defaults.SIZE_MIN, le=defaults.SIZE_MAX)
    height: int | None = Field(default=None, ge=defaults.SIZE_MIN, le=defaults.SIZE_MAX)

    _size = field_validator("width", "height", mode="after")(_multiple_of_8)


class Txt2VideoParams(JobParams):
    """A clip from a prompt: each video is an MP4 (H.264) with an animated WebP beside it."""

    type: Literal[JobType.TXT2VIDEO] = JobType.TXT2VIDEO
    width: int | None = Field(default=None, ge=defaults.SIZE_MIN, le=defaults.SIZE_MAX)
    height: int | None = Field(default=None, ge=defaults.SIZE_MIN, le=defaults.SIZE_MAX)
    num_frames: int | None = Field(
        default=None,
        ge=1,
        le=defaults.FRAMES_MAX,
        validation_alias=AliasChoices("num_frames", "frames"),
    )
    """Frames per video (`frames` is accepted too); absent → the model's default."""
    fps: int | None = Field(default=None, ge=1, le=defaults.FPS_MAX)
    """Frame rate of the encoded video; absent → the model's default."""
    n: int = Field(default=1, ge=1, le=defaults.VIDEOS_MAX)

    _size = field_validator("width", "height", mode="after")(_multiple_of_8)


class _FromImage(_ImageJob):
    """Jobs that start from an input image and denoise `strength` of the way."""

    strength: float = Field(default=defaults.STRENGTH_DEFAULT, ge=0, le=1)

    @model_validator(mode="after")
    def _some_denoising(self) -> _FromImage:
        # diffusers runs int(steps * strength) steps; zero of them is no job at all.
        if self.steps is not None and int(self.steps * self.strength) < 1:
            raise ValueError(
                f"strength {self.strength} with {self.steps} steps leaves no denoising step; "
                "raise strength or steps"
            )
        return self


class _ImageParams(_FromImage):
    mask_blur: int = Field(default=defaults.MASK_BLUR_DEFAULT, ge=0, le=defaults.MASK_BLUR_MAX)


class Img2ImgParams(_FromImage):
    """Restyle a whole image: the output has the input's size."""

    type: Literal[JobType.IMG2IMG] = JobType.IMG2IMG
    strength: float = Field(default=defaults.IMG2IMG_STRENGTH_DEFAULT, ge=0, le=1)


class InpaintParams(_ImageParams):
    type: Literal[JobType.INPAINT] = JobType.INPAINT


class OutpaintParams(_ImageParams):
    type: Literal[JobType.OUTPAINT] = JobType.OUTPAINT
    outpaint: Padding


AnyParams = Txt2ImgParams | Img2ImgParams | InpaintParams | OutpaintParams | Txt2VideoParams
ImageParams = Txt2ImgParams | Img2ImgParams | InpaintParams | OutpaintParams

PARAMS_BY_TYPE: dict[JobType, type[AnyParams]] = {
    JobType.TXT2IMG: Txt2ImgParams,
    JobType.IMG2IMG: Img2ImgParams,
    JobType.INPAINT: InpaintParams,
    JobType.OUTPAINT: OutpaintParams,
    JobType.TXT2VIDEO: Txt2VideoParams,
}

IMAGE_FIELDS = ("image", "mask")
"""Request fields that carry image data; they are stored, never kept in the params."""


def parse_params(data: dict[str, Any]) -> AnyParams:
    """Validate a request body (image fields removed) into the params of its job type.

    Raises `ValueError` for an absent or unknown `type`, pydantic's `ValidationError` otherwise.
    """
    try:
        job_type = JobType(data.get("type", ""))
    except ValueError:
        raise ValueError(
            "type is required: one of " + ", ".join(t.value for t in JobType)
        ) from None
    return PARAMS_BY_TYPE[job_type].model_validate(data)


def new_job_id() -> str:
    return defaults.JOB_ID_PREFIX + secrets.token_urlsafe(16)


def is_job_id(value: str) -> bool:
    return (
        len(value) == len(defaults.JOB_ID_PREFIX) + 22
        and value.startswith(defaults.JOB_ID_PREFIX)
        and all(c.isalnum() or c in "-_" for c in value[len(defaults.JOB_ID_PREFIX) :])
    )


def utcnow() -> str:
    """Now as RFC 3339 in UTC with milliseconds, e.g. `2026-11-30T13:41:56.123Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
