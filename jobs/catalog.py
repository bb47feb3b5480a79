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
"""

from __future__ import annotations

import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jobs import defaults
from jobs.protocol import JobType

SCHEDULER_NAMES = (
    "euler",
    "euler_a",
    "ddim",
    "ddpm",
    "pndm",
    "lms",
    "heun",
    "dpmpp_2m",
    "dpmpp_2m_karras",
    "dpmpp_sde",
    "unipc",
)
"""Stable scheduler names a catalogue entry may list; the worker maps each to a diffusers class."""

FAMILIES = ("sd1",)
"""Model families the worker knows how to load."""

_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    source: str
    family: Literal["sd1"]
    tasks: tuple[JobType, ...] = (
        JobType.TXT2IMG,
        JobType.IMG2IMG,
        JobType.INPAINT,
        JobType.OUTPAINT,
    )
    native_size: tuple[int, int] = (512, 512)
    default_steps: int = Field(default=30, ge=1, le=defaults.STEPS_MAX)
    default_guidance: float = Field(
        default=defaults.GUIDANCE_DEFAULT, ge=0, le=defaults.GUIDANCE_MAX
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    schedulers: tuple[str, ...] = ("euler", "euler_a", "ddim", "dpmpp_2m", "unipc")
    default_scheduler: str | None = None
    demo: bool = False
    """A tiny random-weight model that `python -m worker.demo_model` builds at `source`."""

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
    def _default_scheduler_listed(self) -> ModelEntry:
        if self.default_scheduler is not None and self.default_scheduler not in self.schedulers:
            raise ValueError(f"default_scheduler {self.default_scheduler!r} is not in schedulers")
        return self

    @property
    def inpaints(self) -> bool:
        return JobType.INPAINT in self.tasks or JobType.OUTPAINT in self.tasks

    @property
    def scheduler(self) -> str:
        """The scheduler a job gets when it names none."""
        return self.default_scheduler or self.schedulers[0]


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[ModelEntry, ...]
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
        return self

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
