"""The job types of the API and the options each takes, each option written once.

An option is a key of a job type's TypedDict (`GenerateOptions`, …), with its type and, in an
`Option`, the help and spelling of its command-line flag. `Client` and `AsyncClient` take
the keys as keywords (`**options: Unpack[GenerateOptions]`), `build_submit` sends them, and
`latentq` makes one flag of each: a key added here reaches all three.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict, get_type_hints

from latentq_client._requests import LoraInput, lora_arg


@dataclass(frozen=True)
class Option:
    """What an option's type does not say: how `latentq` offers it, what is sent without it.

    `help` is the flag's help (None: no flag, the SDK alone takes the option); `{output}` and
    `{n_max}` in it stand for the job type's. The flag is `--the-name` unless `flags` spells
    it; `parse` reads its value where the type cannot, and `repeat` lets the flag come again,
    the values making a list. `default` is sent when the keyword is left out; None, given or
    as the default, leaves the option to the service. Options with a `within` go together as
    that object, a None one at its default.
    """

    help: str | None = None
    flags: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    repeat: bool = False
    metavar: str | None = None
    default: Any = None
    within: str | None = None


class JobOptions(TypedDict, total=False):
    """The options of every job type. None leaves an option to the service (the model's
    default), and so does leaving it out, but for those with a default in their `Option`.

    A keyword that is none of these is sent as it is, for a field of a newer service.
    """

    model: Annotated[
        str | None, Option("model id (default: the service's default)", ("-m", "--model"))
    ]
    steps: Annotated[int | None, Option("denoising steps")]
    seed: Annotated[int | None, Option("seed of the first {output}")]
    n: Annotated[int | None, Option("number of {output}s (1-{n_max})", ("-n",), default=1)]
    scheduler: Annotated[str | None, Option("scheduler name, one the model lists")]
    guidance_scale: Annotated[float | None, Option("guidance scale (0-30)", ("--guidance",))]
    negative_prompt: Annotated[str | None, Option("negative prompt", ("--negative",))]
    loras: Annotated[
        LoraInput | None,
        Option(
            "apply a LoRA adapter of the catalogue at SCALE (default 1); repeatable",
            ("--lora",),
            parse=lora_arg,
            repeat=True,
            metavar="ID[:SCALE]",
        ),
    ]
    """Adapters of the catalogue for this job: `{"pixel-art": 0.8}`, `["pixel-art"]` (scale 1),
    `[("pixel-art", 0.8)]` or `[{"id": ..., "scale": ...}]`."""
    priority: Annotated[str | None, Option("queue priority", choices=("high", "normal", "low"))]
    wait: int | None
    """Ask the server to hold the answer until the job ends, up to this many seconds (60)."""
    idempotency_key: str | None
    """A retried submit with the same key returns the first job."""
    webhook: str | None
    """An http(s) URL that gets signed POSTs about the job."""
    webhook_events: Sequence[str] | None
    """Which of `start`, `progress`, `completed` the webhook gets (default `completed`)."""


class ImageOptions(JobOptions, total=False):
    """The options of every image job type."""

    output_format: Annotated[
        str | None,
        Option(
            "output format (default: from the output's suffix, else png)",
            ("--format",),
            choices=("png", "jpeg", "webp"),
        ),
    ]


class SizeOptions(TypedDict, total=False):
    """The size of the output, for the job types that choose it (default: the model's)."""

    width: Annotated[int | None, Option("width in pixels, a multiple of 8")]
    height: Annotated[int | None, Option("height in pixels, a multiple of 8")]


class GenerateOptions(ImageOptions, SizeOptions, total=False):
    """The options of `generate` (txt2img)."""


class Img2ImgOptions(ImageOptions, total=False):
    """The options of `img2img`."""

    strength: Annotated[float | None, Option("how far from the image to go (0-1)")]


class InpaintOptions(ImageOptions, total=False):
    """The options of `inpaint`."""

    strength: Annotated[float | None, Option("how much to change the painted area (0-1)")]
    mask_blur: Annotated[int | None, Option("feather radius of the mask in pixels")]


class OutpaintOptions(InpaintOptions, total=False):
    """The options of `outpaint`: inpaint's, and the pixels to add on each side (default 0)."""

    left: Annotated[int, Option("pixels to add left", default=0, within="outpaint")]
    right: Annotated[int, Option("pixels to add right", default=0, within="outpaint")]
    top: Annotated[int, Option("pixels to add top", default=0, within="outpaint")]
    bottom: Annotated[int, Option("pixels to add bottom", default=0, within="outpaint")]


class VideoOptions(JobOptions, SizeOptions, total=False):
    """The options of `video` (txt2video); frames and rate default to the model's."""

    num_frames: Annotated[
        int | None, Option("frames per video (default: the model's)", ("--frames",))
    ]
    fps: Annotated[int | None, Option("frames per second (default: the model's)")]


@dataclass(frozen=True)
class JobKind:
    """One job type: its client method and command (`name`), the API's `job_type`, its
    options (a TypedDict), the images it takes in order (name: what it is) and its outputs."""

    name: str
    job_type: str
    summary: str
    options: type
    images: Mapping[str, str] = field(default_factory=dict)
    output: str = "image"
    n_max: int = 8
    """The most outputs one job makes (the service's limit), for help texts."""

    @functools.cached_property
    def specs(self) -> dict[str, Option]:
        """Each option's `Option`, in the TypedDict's order (a plain one where it has none)."""
        hints = get_type_hints(self.options, include_extras=True)
        return {
            name: next(
                (m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Option)), Option()
            )
            for name, hint in hints.items()
        }


GENERATE = JobKind("generate", "txt2img", "text to image", GenerateOptions)
IMG2IMG = JobKind(
    "img2img", "img2img", "restyle an image", Img2ImgOptions, {"image": "the image to restyle"}
)
INPAINT = JobKind(
    "inpaint",
    "inpaint",
    "repaint the white areas of a mask",
    InpaintOptions,
    {"image": "the image to change", "mask": "white = repaint, black = keep"},
)
OUTPAINT = JobKind(
    "outpaint",
    "outpaint",
    "extend an image beyond its borders",
    OutpaintOptions,
    {"image": "the image to extend"},
)
VIDEO = JobKind(
    "video",
    "txt2video",
    "text to video (MP4, with an animated WebP beside it)",
    VideoOptions,
    output="video",
    n_max=4,
)

JOB_KINDS = (GENERATE, IMG2IMG, INPAINT, OUTPAINT, VIDEO)
