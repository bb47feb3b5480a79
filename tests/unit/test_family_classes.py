"""The family classes: one per catalogue family, and the only code that tells families apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from jobs.families import FAMILIES, FAMILY_RULES
from worker.families import FAMILIES as CLASSES
from worker.families import family_of

ROOT = Path(__file__).resolve().parents[2]


def test_one_class_per_catalogue_family_in_its_order() -> None:
    assert tuple(CLASSES) == FAMILIES == tuple(FAMILY_RULES)
    for name, family in CLASSES.items():
        assert family.name == name
        assert family.rules is FAMILY_RULES[name]
        assert family_of(name) is family
    with pytest.raises(ValueError, match="unknown model family 'sd9'"):
        family_of("sd9")


def test_what_the_classes_say_about_their_families() -> None:
    # The UNet families run channels-last on CUDA; the T5 families read a bounded prompt and
    # the others have theirs encoded in chunks.
    assert [f.name for f in CLASSES.values() if f.channels_last] == ["sd1", "sdxl"]
    assert [f.name for f in CLASSES.values() if f.token_limit is None] == ["sd1", "sdxl"]
    assert [f.name for f in CLASSES.values() if f.vae_upcast_in_half] == ["sdxl", "video"]
    assert CLASSES["flux"].text_kwargs("a", "b", 512) == {"prompt": "a", "max_sequence_length": 512}
    assert CLASSES["sd1"].text_kwargs("a", "b", None) == {"prompt": "a", "negative_prompt": "b"}
    # Chroma is Flux's layout with a negative prompt.
    assert CLASSES["chroma"].text_kwargs("a", "b", 512) == {
        "prompt": "a",
        "negative_prompt": "b",
        "max_sequence_length": 512,
    }


def _family_comparisons(path: Path) -> list[str]:
    """Lines of `path` that compare something with a family's name (==, !=, in, not in)."""
    names = set(FAMILIES)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Compare):
            continue
        for operand in (node.left, *node.comparators):
            constants = (
                operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
            )
            if any(isinstance(c, ast.Constant) and c.value in names for c in constants):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_code_outside_the_family_classes_compares_family_names() -> None:
    files = [
        path
        for package in ("jobs", "app", "worker")
        for path in sorted((ROOT / package).rglob("*.py"))
        if "families" not in path.relative_to(ROOT).parts
    ]
    assert len(files) > 40
    found = [line for path in files for line in _family_comparisons(path)]
    assert found == [], "compare family names only in worker/families: " + ", ".join(found)
