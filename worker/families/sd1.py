"""Stable Diffusion 1.x and 2.x: a UNet and one CLIP text encoder."""

from __future__ import annotations

from typing import ClassVar

from worker.families.clip import ClipUNetFamily


class SD1(ClipUNetFamily):
    name: ClassVar[str] = "sd1"
