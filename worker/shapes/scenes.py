"""The shapes scene set: procedural pictures of one or two shapes on a plain background.

Every scene has an exact label (background colour; each shape's colour, kind, position and
size), renders deterministically from it, and gets captions written from the label with
varied wording, so that a model trained on them learns the words rather than one template.
Nothing is read from disk: the same seed always yields the same scenes.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
"""Side of a rendered scene, in pixels: 64 keeps the VAE and its training cheap on a CPU,
and the judge still reads every shape at this size."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 38, 38),
    "green": (40, 160, 64),
    "blue": (36, 84, 216),
    "yellow": (246, 214, 40),
    "orange": (246, 134, 24),
    "purple": (132, 52, 184),
    "white": (246, 246, 242),
    "black": (22, 22, 24),
}
KINDS = ("circle", "square", "triangle")
SIZES = ("small", "large")
# Cells of a 3x3 grid: (column, row).
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "center": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
CELL_CENTRES = (0.25, 0.5, 0.75)
"""Where a cell's shape is centred, as a fraction of the side."""
RADIUS = {"small": 0.09, "large": 0.17}
"""Half the extent of a shape, as a fraction of the side."""
JITTER = 0.02
"""How far a shape's centre may stray from its cell's centre, as a fraction of the side."""
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Shape:
    colour: str
    kind: str
    position: str
    size: str


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[Shape, ...]
    # Where each shape's centre strays from its cell's centre, in fractions of the side.
    offsets: tuple[tuple[float, float], ...] = ()
    style: str = "filled"
    """"filled", or "outline" for the large shapes drawn as rings (the style adapter's look;
    a small shape, eleven pixels across, stays filled: its ring would have no hole to see)."""


# -- which combinations are held out of training -------------------------------------------


def combination_key(shape: Shape, background: str) -> str:
    return f"{shape.colour}|{shape.kind}|{shape.position}|{background}"


def is_held_out(shape: Shape, background: str) -> bool:
    """One combination of colour, kind, position and background in twenty never appears in
    training: the quality measure asks for those, so it measures words, not memory."""
    return zlib.crc32(combination_key(shape, background).encode()) % 20 == 0


# -- sampling labels ----------------------------------------------------------------------


def _neighbours(a: str, b: str) -> bool:
    (ax, ay), (bx, by) = POSITIONS[a], POSITIONS[b]
    return max(abs(ax - bx), abs(ay - by)) == 1


def random_shape(rng: random.Random, background: str, *, position: str | None = None) -> Shape:
    colour = rng.choice([c for c in COLOURS if c != background])
    return Shape(
        colour=colour,
        kind=rng.choice(KINDS),
        position=position or rng.choice(list(POSITIONS)),
        size=rng.choice(SIZES),
    )


def random_scene(
    rng: random.Random, *, held_out: bool = False, two_shapes: float = 0.3, style: str = "filled"
) -> Scene:
    """A random scene. With ``held_out`` its (single) shape is one of the held-out
    combinations; otherwise none of its shapes is."""
    while True:
        background = rng.choice(list(COLOURS))
        count = 1 if held_out or rng.random() >= two_shapes else 2
        shapes = [random_shape(rng, background)]
        if count == 2:
            second = random_shape(rng, background)
            if second.position == shapes[0].position:
                continue
            if _neighbours(second.position, shapes[0].position):
                # Neighbouring cells leave room for two small shapes only.
                shapes[0] = Shape(shapes[0].colour, shapes[0].kind, shapes[0].position, "small")
                second = Shape(second.colour, second.kind, second.position, "small")
            shapes.append(second)
        if any(is_held_out(s, background) != held_out for s in shapes):
            continue
        offsets = tuple(
            (rng.uniform(-JITTER, JITTER), rng.uniform(-JITTER, JITTER)) for _ in shapes
        )
        return Scene(background, tuple(shapes), offsets, style)


def scenes(seed: int, count: int, **kwargs: object) -> Iterator[Scene]:
    rng = random.Random(seed)
    for _ in range(count):
        yield random_scene(rng, **kwargs)  # type: ignore[arg-type]


# -- rendering ------------------------------------------------------------------------------


def shape_box(
    shape: Shape, offset: tuple[float, float] = (0.0, 0.0), side: int = SIZE
) -> tuple[float, float, float]:
    """The shape's centre and half extent, in pixels of a ``side``-pixel image."""
    column, row = POSITIONS[shape.position]
    cx = (CELL_CENTRES[column] + offset[0]) * side
    cy = (CELL_CENTRES[row] + offset[1]) * side
    return cx, cy, RADIUS[shape.size] * side


def _draw(
    draw: ImageDraw.ImageDraw,
    shape: Shape,
    box: tuple[float, float, float],
    fill: tuple[int, int, int],
    background: tuple[int, int, int],
    outline: bool,
) -> None:
    cx, cy, r = box
    if shape.kind == "circle":
        outer = [cx - r, cy - r, cx + r, cy + r]
        draw.ellipse(outer, fill=fill)
        if outline:
            inner = r * 0.45
            draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=background)
    elif shape.kind == "square":
        h = r * 0.89  # about the circle's area
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
        if outline:
            inner = h * 0.4
            draw.rectangle([cx - inner, cy - inner, cx + inner, cy + inner], fill=background)
    else:
        h = r * 1.1
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
        if outline:
            # The inner triangle shares the outer one's incentre, scaled down.
            ix, iy = cx, cy - h + 2 * h * (5**0.5) / (1 + 5**0.5)
            k = 0.35
            draw.polygon(
                [
                    (ix + k * (cx - ix), iy + k * (cy - h - iy)),
                    (ix + k * (cx + h - ix), iy + k * (cy + h - iy)),
                    (ix + k * (cx - h - ix), iy + k * (cy + h - iy)),
                ],
                fill=background,
            )


def render(scene: Scene, side: int = SIZE) -> np.ndarray:
    """The scene as an ``(side, side, 3)`` uint8 array, edges anti-aliased."""
    big = side * SUPERSAMPLE
    background = COLOURS[scene.background]
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    offsets = scene.offsets or tuple((0.0, 0.0) for _ in scene.shapes)
    for shape, offset in zip(scene.shapes, offsets, strict=True):
        box = shape_box(shape, offset, big)
        ring = scene.style == "outline" and shape.size == "large"
        _draw(draw, shape, box, COLOURS[shape.colour], background, ring)
    image = image.resize((side, side), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8)


# -- captions -------------------------------------------------------------------------------

_POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "center": ("in the center", "in the middle", "at the center", "center"),
    "left": ("on the left", "at the left", "to the left", "left"),
    "right": ("on the right", "at the right", "to the right", "right"),
    "top": ("at the top", "on the top", "at the top side", "top"),
    "bottom": ("at the bottom", "on the bottom", "at the bottom side", "bottom"),
}
_CORNER_FORMS = ("in the {} corner", "at the {}", "in the {}", "{} corner", "{}")


def position_phrase(position: str, rng: random.Random) -> str:
    if position in _POSITION_PHRASES:
        return rng.choice(_POSITION_PHRASES[position])
    return rng.choice(_CORNER_FORMS).format(position)


def _article(word: str, rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.15:
        return ""
    if choice < 0.3:
        return "one "
    return _a(word) + " "


def shape_phrase(
    shape: Shape,
    rng: random.Random,
    *,
    size: bool | None = None,
    position: bool | None = None,
) -> str:
    """``a small red circle on the left``, with the size and position left out at times."""
    with_size = rng.random() < 0.6 if size is None else size
    with_position = rng.random() < 0.9 if position is None else position
    words = [shape.size] if with_size else []
    words += [shape.colour, shape.kind]
    phrase = _article(words[0], rng) + " ".join(words)
    if not with_position:
        return phrase
    where = position_phrase(shape.position, rng)
    if rng.random() < 0.2:
        return f"{where}, {phrase}" if rng.random() < 0.5 else f"{where} {phrase}"
    return f"{phrase} {where}" if rng.random() < 0.8 else f"{phrase}, {where}"


_BACKGROUND_FORMS = (
    "on {a} {} background",
    "on {a} {} background",
    "on {}",
    "with {a} {} background",
    "{} background",
)


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _on_a(colour: str) -> str:
    return f"on {_a(colour)} {colour}"


def caption(scene: Scene, rng: random.Random, *, complete: bool = False) -> str:
    """One caption of the scene. Parts (size, position, background) are sometimes left out,
    and the order of its phrases varies; ``complete`` names every part in the plain order."""
    if complete:
        phrases = [shape_phrase(s, rng, size=True, position=True) for s in scene.shapes]
        return f"{' and '.join(phrases)} {_on_a(scene.background)} background"
    phrases = [shape_phrase(s, rng) for s in scene.shapes]
    joined = " and ".join(phrases) if rng.random() < 0.7 else ", ".join(phrases)
    if rng.random() < 0.15:
        return joined
    background = rng.choice(_BACKGROUND_FORMS).format(scene.background, a=_a(scene.background))
    if rng.random() < 0.25:
        return f"{background}, {joined}" if rng.random() < 0.6 else f"{background} {joined}"
    return f"{joined} {background}" if rng.random() < 0.8 else f"{joined}, {background}"


def prompt(shape: Shape, background: str) -> str:
    """The plain prompt that names every part of a one-shape scene."""
    where = _POSITION_PHRASES.get(shape.position, (_CORNER_FORMS[0].format(shape.position),))[0]
    words = f"{shape.size} {shape.colour} {shape.kind}"
    return f"{_a(words)} {words} {where} {_on_a(background)} background"


VOCABULARY: tuple[str, ...] = tuple(
    sorted(
        {
            *COLOURS,
            *KINDS,
            *SIZES,
            *(word for p in POSITIONS for word in p.split()),
            *(word for forms in _POSITION_PHRASES.values() for f in forms for word in f.split()),
            *(
                w
                for f in (*_CORNER_FORMS, *_BACKGROUND_FORMS)
                for w in f.split()
                if w not in ("{}", "{a}")
            ),
            "a",
            "an",
            "one",
            "and",
            "middle",
            "outline",
            "outlined",
        }
    )
)
"""Every word the captions use: the demo model's tokenizer makes each a single token."""
