"""The model catalogue: which models exist, what they can do, and their defaults.

Read by the API (to validate requests and answer `GET /v1/models`) and by workers (to load
pipelines). A TOML file:

    default = "tiny-sd"

    [[models]]
    id = "tiny-sd"
    source = "var/models/tiny-sd"   # a diffusers folder (relative to this file) or a hub id
    family = "sd1"
    tasks = ["txt2img", "img2img", "inpaint", "outpaint"]
    native_size = [512, 512]
    default_steps = 20
    dtype = "auto"
    schedulers = ["euler", "euler_a", "ddim", "dpmpp_2m"]

Families (`jobs.families.FAMILY_RULES`): `sd1` and `sdxl` (UNets predicting noise: txt2img,
img2img, inpaint, outpaint with the epsilon/v schedulers), `sd3` and `flux` (flow-matching
transformers: the same tasks with flow-matching schedulers), `chroma` (a flow-matching
transformer: txt2img) and `video` (Wan 2.1 text-to-video: txt2video). Fields an entry leaves
out take its family's defaults.
"""

from __future__ import annotations

import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from jobs import defaults
from jobs.families import (
    FAMILY_RULES,
    IMAGE_TASKS,
    SCHEDULER_NAMES,
    Family,
    FamilyRules,
)
from jobs.protocol import JobType

_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ADAPTER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
"""As a model id, without dots: peft keys each adapter's layers by its id, in module
dictionaries whose keys may not hold one (the worker would refuse it at load)."""
_VIDEO_FIELDS = ("max_frames", "default_frames", "default_fps")


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    source: str
    family: Family
    tasks: tuple[JobType, ...] = IMAGE_TASKS
    """Default: every task of the family."""
    native_size: tuple[int, int] = (512, 512)
    """Default: the family's (512² sd1, 1024² sdxl/sd3/flux/chroma, 832×480 video)."""
    default_steps: int = Field(default=30, ge=1, le=defaults.STEPS_MAX)
    default_guidance: float = Field(
        default=defaults.GUIDANCE_DEFAULT, ge=0, le=defaults.GUIDANCE_MAX
    )
    """Default: the family's (7.5 sd1/sdxl, 7.0 sd3, 3.5 flux, 3.0 chroma, 5.0 video)."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    schedulers: tuple[str, ...] = ("euler", "euler_a", "ddim", "dpmpp_2m", "unipc")
    """Default: the family's list (`FAMILY_RULES`)."""
    default_scheduler: str | None = None
    max_sequence_length: int | None = Field(default=None, ge=1, le=1024)
    """Prompt tokens of the T5 encoder (sd3, flux, chroma, video); default: the family's."""
    max_frames: int = Field(default=81, ge=1, le=defaults.FRAMES_MAX)
    """(video) Most frames a job may ask for."""
    default_frames: int = Field(default=33, ge=1, le=defaults.FRAMES_MAX)
    """(video) Frames of a job that gives none."""
    default_fps: int = Field(default=16, ge=1, le=defaults.FPS_MAX)
    """(video) Frame rate of a job that gives none."""
    demo: bool = False
    """A tiny random-weight model that `python -m worker.demo_model` builds at `source`."""
    description: str = Field(default="", max_length=500)
    """What the model is, for people choosing one."""
    prompt_hint: str = Field(default="", max_length=2000)
    """What its prompts should say (a vocabulary, a form): clients show it next to the prompt."""

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """Fields an entry leaves out take its family's values."""
        if not isinstance(data, dict) or data.get("family") not in FAMILY_RULES:
            return data
        rules = FAMILY_RULES[data["family"]]
        filled = {
            "tasks": rules.tasks,
            "schedulers": rules.default_schedulers,
            "native_size": rules.native_size,
            "default_guidance": rules.default_guidance,
            "max_sequence_length": rules.max_sequence_length,
        }
        return {**{k: v for k, v in filled.items() if k not in data}, **data}

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        # The id becomes part of Redis queue names; keep it plain.
        if not _MODEL_ID.match(value):
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-' (at most 64)")
        return value

    @field_validator("schedulers")
    @classmethod
    def _known_schedulers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in SCHEDULER_NAMES]
        if unknown:
            raise ValueError(f"unknown schedulers {unknown}; known: {', '.join(SCHEDULER_NAMES)}")
        if not value:
            raise ValueError("list at least one scheduler")
        return value

    @field_validator("native_size")
    @classmethod
    def _valid_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        for side in value:
            if side % defaults.SIZE_MULTIPLE or not defaults.SIZE_MIN <= side <= defaults.SIZE_MAX:
                raise ValueError(
                    f"sides must be multiples of {defaults.SIZE_MULTIPLE} "
                    f"in {defaults.SIZE_MIN}..{defaults.SIZE_MAX}"
                )
        return value

    @model_validator(mode="after")
    def _fits_its_family(self) -> ModelEntry:
        rules = self.rules
        if not self.tasks:
            raise ValueError("list at least one task")
        missing = [t.value for t in self.tasks if t not in rules.tasks]
        if missing:
            raise ValueError(
                f"family {self.family} has no pipeline for {', '.join(missing)}; "
                f"its tasks: {', '.join(rules.tasks)}"
            )
        misfits = [name for name in self.schedulers if name not in rules.schedulers]
        if misfits:
            kind = "a flow-matching" if rules.flow_matching else "a noise-predicting (UNet)"
            raise ValueError(
                f"schedulers {misfits} do not fit family {self.family} ({kind} model); "
                f"it takes: {', '.join(rules.schedulers)}"
            )
        from_image = [t.value for t in self.tasks if t.needs_image]
        if rules.from_image_schedulers is not None and from_image:
            misfits = [n for n in self.schedulers if n not in rules.from_image_schedulers]
            if misfits:
                raise ValueError(
                    f"schedulers {misfits} cannot start from an image in family "
                    f"{self.family}, and this entry lists {', '.join(from_image)}: list only "
                    f"{', '.join(rules.from_image_schedulers)}, or serve txt2img alone"
                )
        if self.default_scheduler is not None and self.default_scheduler not in self.schedulers:
            raise ValueError(f"default_scheduler {self.default_scheduler!r} is not in schedulers")
        if self.max_sequence_length is not None and rules.max_sequence_length is None:
            t5 = [name for name, rules in FAMILY_RULES.items() if rules.max_sequence_length]
            raise ValueError(
                f"max_sequence_length applies to families with a T5 encoder "
                f"({', '.join(t5)}), not {self.family}"
            )
        if self.is_video:
            if self.default_frames > self.max_frames:
                raise ValueError(
                    f"default_frames {self.default_frames} is above max_frames {self.max_frames}"
                )
        else:
            video_only = [name for name in _VIDEO_FIELDS if name in self.model_fields_set]
            if video_only:
                raise ValueError(f"{', '.join(video_only)} apply to the video family only")
        return self

    @property
    def rules(self) -> FamilyRules:
        return FAMILY_RULES[self.family]

    @property
    def inpaints(self) -> bool:
        return JobType.INPAINT in self.tasks or JobType.OUTPAINT in self.tasks

    @property
    def is_video(self) -> bool:
        return JobType.TXT2VIDEO in self.rules.tasks

    @property
    def scheduler(self) -> str:
        """The scheduler a job gets when it names none."""
        return self.default_scheduler or self.schedulers[0]


class AdapterEntry(BaseModel):
    """A LoRA adapter jobs may apply (`"loras": [{"id": ..., "scale": ...}]`): loaded once
    by every worker holding a model it fits, switched on per job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    source: str
    """A LoRA `.safetensors` file or a folder holding one (relative to the catalogue)."""
    families: tuple[Family, ...]
    """Families of the models it was trained for."""
    models: tuple[str, ...] = ()
    """Only these models (default: every model of its families)."""
    description: str = ""
    demo: bool = False
    """A tiny random LoRA that the worker builds at `source` for the (demo) models it lists."""

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not _ADAPTER_ID.match(value):
            raise ValueError(
                "must be lowercase letters, digits, '_' or '-' (at most 64; no dots, which "
                "LoRA layers cannot be keyed by)"
            )
        return value

    @field_validator("families")
    @classmethod
    def _some_family(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list the families the adapter fits")
        refused = [family for family in value if not FAMILY_RULES[family].adapters]
        if refused:
            raise ValueError(
                f"adapters are served for the image families only, not {', '.join(refused)}"
            )
        return value

    def fits(self, model: ModelEntry) -> bool:
        return model.family in self.families and (not self.models or model.id in self.models)


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[ModelEntry, ...]
    adapters: tuple[AdapterEntry, ...] = ()
    default: str | None = None
    base_dir: Path = Path(".")
    """Relative local sources resolve against this folder (the catalogue file's)."""

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        if not self.models:
            raise ValueError("the catalogue lists no models")
        ids = [m.id for m in self.models]
        if len(set(ids)) != len(ids):
            raise ValueError("model ids must be unique")
        if self.default is not None and self.default not in ids:
            raise ValueError(f"default model {self.default!r} is not listed")
        adapter_ids = [a.id for a in self.adapters]
        if len(set(adapter_ids)) != len(adapter_ids):
            raise ValueError("adapter ids must be unique")
        for adapter in self.adapters:
            unknown = [m for m in adapter.models if m not in ids]
            if unknown:
                raise ValueError(f"adapter {adapter.id} names unknown models {unknown}")
            if adapter.demo and not adapter.models:
                raise ValueError(f"demo adapter {adapter.id} must name the models it is built for")
        return self

    def adapters_for(self, model: ModelEntry) -> list[AdapterEntry]:
        """The adapters jobs of `model` may apply."""
        return [a for a in self.adapters if a.fits(model)]

    def adapter_path(self, adapter: AdapterEntry) -> Path:
        path = Path(adapter.source).expanduser()
        return (path if path.is_absolute() else self.base_dir / path).resolve()

    @cached_property
    def by_id(self) -> dict[str, ModelEntry]:
        return {m.id: m for m in self.models}

    @property
    def default_id(self) -> str:
        return self.default or self.models[0].id

    def get(self, model_id: str | None) -> ModelEntry | None:
        return self.by_id.get(model_id or self.default_id)

    def local_path(self, entry: ModelEntry) -> Path | None:
        """The folder of a local source, or None when the source is a hub id."""
        path = Path(entry.source).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        if entry.demo or path.exists() or entry.source.startswith((".", "/", "~")):
            return path.resolve()
        return None


class CatalogError(ValueError):
    pass


def load_catalog(path: Path) -> Catalog:
    """Read and check a catalogue file; `CatalogError` says what is wrong and where."""
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"model catalogue {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"model catalogue {path} is not valid TOML: {exc}") from None
    try:
        return Catalog.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise CatalogError(f"model catalogue {path}: {exc}") from None
