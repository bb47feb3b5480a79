"""The model catalogue file."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.catalog import SCHEDULER_NAMES, CatalogError, load_catalog
from tests.conftest import ROOT
from worker.schedulers import SCHEDULERS

GOOD = """
default = "b"
[[models]]
id = "a"
source = "models/a"
family = "sd1"
[[models]]
id = "b"
source = "org/some-model"
family = "sd1"
tasks = ["txt2img"]
native_size = [768, 512]
default_steps = 25
schedulers = ["ddim", "euler"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_reads_entries_and_defaults(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, GOOD))
    assert catalog.default_id == "b"
    a, b = catalog.get("a"), catalog.get(None)
    assert a is not None and b is not None and b.id == "b"
    assert a.tasks == ("txt2img", "img2img", "inpaint", "outpaint") and a.inpaints
    assert b.native_size == (768, 512) and b.scheduler == "ddim" and not b.inpaints
    assert catalog.get("nope") is None


def test_relative_sources_resolve_against_the_file(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, GOOD))
    a, b = catalog.by_id["a"], catalog.by_id["b"]
    (tmp_path / "models" / "a").mkdir(parents=True)
    assert catalog.local_path(a) == (tmp_path / "models" / "a").resolve()
    assert catalog.local_path(b) is None  # a hub id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "models"),
        ("models = []", "lists no models"),
        ('default = "x"\n[[models]]\nid = "a"\nsource = "s"\nfamily = "sd1"', "not listed"),
        ('[[models]]\nid = "A B"\nsource = "s"\nfamily = "sd1"', "lowercase"),
        ('[[models]]\nid = "a"\nsource = "s"\nfamily = "dalle"', "family"),
        ('[[models]]\nid = "a"\nsource = "s"\nfamily = "sd1"\nschedulers = ["warp"]', "warp"),
        (
            '[[models]]\nid = "a"\nsource = "s"\nfamily = "sd1"\nnative_size = [500, 512]',
            "multiples",
        ),
        (
            '[[models]]\nid = "a"\nsource = "s"\nfamily = "sd1"\n[[models]]\nid = "a"\n'
            'source = "t"\nfamily = "sd1"',
            "unique",
        ),
        ('[[models]]\nid = "a"\nsource = "s"\nfamily = "sd1"\ncolour = 1', "colour"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_catalogues_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        load_catalog(write(tmp_path, text))


def test_missing_catalogue(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "none.toml")


def test_every_scheduler_name_has_a_diffusers_class() -> None:
    import diffusers

    assert set(SCHEDULERS) == set(SCHEDULER_NAMES)
    for class_name, _ in SCHEDULERS.values():
        assert hasattr(diffusers, class_name)


def test_the_shipped_catalogue_is_valid() -> None:
    catalog = load_catalog(ROOT / "models.toml")
    assert catalog.default_id in catalog.by_id
