"""The model families, one class each, in one table.

`family_of` gives the class of a catalogue entry's ``family``; the warm models, the runtime
choice and the prompt encoders ask it, and compare no family names themselves. The API's
side of a family (its tasks, schedulers, defaults) is its `FamilyRules` in `jobs.families`,
which the API reads without importing the worker; `FAMILIES` has exactly those names.

Adding a family (README, "Adding a model family"): a module here with its class (override
what differs from `BaseFamily`, and its `tiny` builder), a line in `FAMILIES`, and its
`FamilyRules`.
"""

from __future__ import annotations

from jobs.families import FAMILY_RULES
from worker.families.base import BaseFamily, Family
from worker.families.chroma import Chroma
from worker.families.flux import Flux
from worker.families.sd1 import SD1
from worker.families.sd3 import SD3
from worker.families.sdxl import SDXL
from worker.families.video import Video

__all__ = ["FAMILIES", "BaseFamily", "Family", "family_of"]

FAMILIES: dict[str, Family] = {
    family.name: family for family in (SD1(), SDXL(), SD3(), Flux(), Chroma(), Video())
}
"""Every family, by the catalogue's name for it, in the catalogue's order."""

if tuple(FAMILIES) != tuple(FAMILY_RULES):
    raise RuntimeError(
        f"worker families {tuple(FAMILIES)} differ from the catalogue's {tuple(FAMILY_RULES)}"
    )


def family_of(name: str) -> Family:
    """The class of family `name`; ValueError for a name no family has."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}") from None
