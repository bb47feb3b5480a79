"""The judge: which shapes an image shows, read with colour segmentation and shape moments.

Deterministic and model-free: every pixel takes the nearest colour of the scene set's
palette, the background is the colour most of the border has, and each connected region of
another colour large enough to be a shape is one shape. Its kind comes from how much of its
bounding box it fills (a square nearly all, a circle π/4, a triangle half), its position from
the centre of its box on the 3x3 grid, its size from the box's extent. Holes are filled before
measuring, so a ring is judged as the shape it outlines and reported as ``outline``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from worker.shapes.scenes import COLOURS, POSITIONS, RADIUS, Scene, Shape

_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[name] for name in _NAMES], dtype=np.float32)
_CELL = {cell: name for name, cell in POSITIONS.items()}

MIN_AREA = 0.012
"""A region smaller than this fraction of the image is not a shape (noise, an edge)."""
FAR = 110.0
"""A pixel farther than this (RGB distance) from every palette colour belongs to none."""
SMALL_LARGE = RADIUS["small"] + RADIUS["large"]
"""Box extent, as a fraction of the side, between small and large shapes."""


@dataclass(frozen=True)
class Found:
    colour: str
    kind: str
    position: str
    size: str
    area: float
    """Fraction of the image the shape covers, holes filled."""
    outline: bool
    """Drawn as a ring: its filled area is much larger than its own."""

    def shape(self) -> Shape:
        return Shape(self.colour, self.kind, self.position, self.size)


@dataclass(frozen=True)
class Verdict:
    background: str | None
    shapes: tuple[Found, ...]
    """Largest first."""

    def matches(self, scene: Scene) -> bool:
        """The image shows exactly the scene: its background and the same set of shapes."""
        return self.background == scene.background and sorted(
            (f.shape() for f in self.shapes), key=repr
        ) == sorted(scene.shapes, key=repr)


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    return np.asarray(image, dtype=np.float32)[..., :3]


def classify(image: Image.Image | np.ndarray) -> np.ndarray:
    """Each pixel's palette index, or -1 where no palette colour is near."""
    pixels = _as_array(image)
    distances = np.linalg.norm(pixels[..., None, :] - _PALETTE, axis=-1)
    labels = distances.argmin(axis=-1)
    labels[distances.min(axis=-1) > FAR] = -1
    return np.asarray(labels)


def _kind(fill: float, aspect: float) -> str:
    if fill > 0.88 and aspect > 0.75:
        return "square"
    if fill > 0.66:
        return "circle"
    return "triangle"


def judge(image: Image.Image | np.ndarray) -> Verdict:
    labels = classify(image)
    height, width = labels.shape
    border = np.concatenate(
        [labels[:2].ravel(), labels[-2:].ravel(), labels[:, :2].ravel(), labels[:, -2:].ravel()]
    )
    border = border[border >= 0]
    if border.size == 0:
        return Verdict(None, ())
    background_index = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    foreground = labels != background_index
    # A pixel or two of mixed colour along an edge must not join or split regions.
    foreground = ndimage.binary_opening(foreground, iterations=1)
    regions, count = ndimage.label(foreground)
    found = []
    for index, box in enumerate(ndimage.find_objects(regions), start=1):
        if box is None:
            continue
        own = regions[box] == index
        filled = ndimage.binary_fill_holes(own)
        area = float(filled.sum())
        if area < MIN_AREA * height * width:
            continue
        colours = labels[box][own]
        colours = colours[colours >= 0]
        if colours.size == 0:
            continue
        colour = _NAMES[int(np.bincount(colours, minlength=len(_NAMES)).argmax())]
        rows, columns = box[0], box[1]
        box_h, box_w = rows.stop - rows.start, columns.stop - columns.start
        fill = area / (box_h * box_w)
        aspect = min(box_h, box_w) / max(box_h, box_w)
        cx = (columns.start + columns.stop) / 2 / width
        cy = (rows.start + rows.stop) / 2 / height
        cell = (_cell(cx), _cell(cy))
        extent = max(box_h / height, box_w / width)
        found.append(
            Found(
                colour=colour,
                kind=_kind(fill, aspect),
                position=_CELL[cell],
                size="large" if extent > SMALL_LARGE else "small",
                area=area / (height * width),
                outline=float(own.sum()) < 0.95 * area,
            )
        )
    found.sort(key=lambda f: -f.area)
    return Verdict(_NAMES[background_index], tuple(found))


def _cell(fraction: float) -> int:
    if fraction < 0.375:
        return 0
    if fraction > 0.625:
        return 2
    return 1


@dataclass(frozen=True)
class Score:
    colour: bool
    kind: bool
    position: bool
    size: bool
    background: bool

    @property
    def all(self) -> bool:
        return self.colour and self.kind and self.position and self.background


def score(asked: Shape, background: str, verdict: Verdict) -> Score:
    """How a one-shape prompt was followed, judged on the largest shape found. No shape found
    counts as wrong in every respect but the background."""
    if not verdict.shapes:
        return Score(False, False, False, False, verdict.background == background)
    main = verdict.shapes[0]
    return Score(
        colour=main.colour == asked.colour,
        kind=main.kind == asked.kind,
        position=main.position == asked.position,
        size=main.size == asked.size,
        background=verdict.background == background,
    )
