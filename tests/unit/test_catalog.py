"""The model catalogue file."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.catalog import Catalog, CatalogError, load_catalog
from jobs.families import FAMILIES, FAMILY_RULES, SCHEDULER_NAMES
from jobs.protocol import JobType
from tests.conftest import ROOT
from worker.schedulers import FLOW_SCHEDULERS, SCHEDULERS

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
    for class_name, _ in (*SCHEDULERS.values(), *FLOW_SCHEDULERS.values()):
        assert hasattr(diffusers, class_name)


def test_the_shipped_catalogue_is_valid() -> None:
    catalog = load_catalog(ROOT / "models.toml")
    assert catalog.default_id in catalog.by_id


# -- families ----------------------------------------------------------------------------


def entry_toml(family: str, extra: str = "") -> str:
    return f'[[models]]\nid = "m"\nsource = "s"\nfamily = "{family}"\n{extra}'


def test_every_family_has_rules_and_a_demo_builder() -> None:
    from worker.families import FAMILIES as WORKER_FAMILIES

    assert tuple(FAMILY_RULES) == FAMILIES == tuple(WORKER_FAMILIES)
    assert all(callable(family.tiny) for family in WORKER_FAMILIES.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_an_entry_without_tasks_or_schedulers_takes_its_familys(
    tmp_path: Path, family: str
) -> None:
    entry = load_catalog(write(tmp_path, entry_toml(family))).by_id["m"]
    rules = FAMILY_RULES[family]
    assert entry.tasks == rules.tasks
    assert entry.schedulers == rules.default_schedulers
    assert entry.native_size == rules.native_size
    assert entry.default_guidance == rules.default_guidance
    assert entry.max_sequence_length == rules.max_sequence_length
    assert set(entry.schedulers) <= set(rules.schedulers)


def test_family_tasks() -> None:
    image = {"txt2img", "img2img", "inpaint", "outpaint"}
    for family in ("sd1", "sdxl", "sd3", "flux"):
        assert set(FAMILY_RULES[family].tasks) == image
    assert FAMILY_RULES["video"].tasks == (JobType.TXT2VIDEO,)


def test_family_schedulers() -> None:
    flow = {"flow_euler", "unipc", "dpmpp_2m"}
    for family in ("sd1", "sdxl"):
        accepted = set(FAMILY_RULES[family].schedulers)
        assert "lcm" in accepted and "euler_a" in accepted and "flow_euler" not in accepted
    for family in ("sd3", "flux", "video"):
        assert set(FAMILY_RULES[family].schedulers) == flow
    assert FAMILY_RULES["video"].default_schedulers[0] == "unipc"


def test_explicit_values_beat_the_family_defaults(tmp_path: Path) -> None:
    text = entry_toml(
        "flux",
        'tasks = ["txt2img"]\nschedulers = ["dpmpp_2m", "flow_euler"]\n'
        "native_size = [512, 768]\ndefault_guidance = 4.5\nmax_sequence_length = 256\n",
    )
    entry = load_catalog(write(tmp_path, text)).by_id["m"]
    assert entry.tasks == ("txt2img",) and entry.scheduler == "dpmpp_2m"
    assert entry.native_size == (512, 768) and entry.default_guidance == 4.5
    assert entry.max_sequence_length == 256


def test_video_limits(tmp_path: Path) -> None:
    text = entry_toml("video", "max_frames = 49\ndefault_frames = 17\ndefault_fps = 12\n")
    entry = load_catalog(write(tmp_path, text)).by_id["m"]
    assert (entry.max_frames, entry.default_frames, entry.default_fps) == (49, 17, 12)
    assert entry.is_video and not entry.inpaints
    plain = load_catalog(write(tmp_path, entry_toml("video"))).by_id["m"]
    assert plain.default_frames <= plain.max_frames


@pytest.mark.parametrize(
    ("family", "extra", "message"),
    [
        ("flux", 'tasks = ["txt2video"]', "family flux has no pipeline for txt2video"),
        ("video", 'tasks = ["txt2img"]', "family video has no pipeline for txt2img"),
        ("sd1", 'tasks = ["txt2img", "txt2video"]', "no pipeline for txt2video"),
        ("sd1", "tasks = []", "at least one task"),
        ("sd1", 'schedulers = ["euler", "flow_euler"]', r"\['flow_euler'\] do not fit family sd1"),
        ("sdxl", 'schedulers = ["flow_euler"]', "noise-predicting"),
        ("flux", 'schedulers = ["euler"]', r"\['euler'\] do not fit family flux"),
        ("video", 'schedulers = ["lcm"]', "flow-matching"),
        ("sd3", 'schedulers = ["flow_euler", "unipc"]', "cannot start from an image"),
        ("flux", 'tasks = ["inpaint"]\nschedulers = ["dpmpp_2m"]', "list only flow_euler"),
        ("video", "default_frames = 40\nmax_frames = 33", "above max_frames"),
        ("video", "max_frames = 1000", "max_frames"),
        ("sd1", "max_frames = 16", "video family only"),
        ("sdxl", "max_sequence_length = 77", "T5 encoder"),
        ("video", 'schedulers = ["unipc"]\ndefault_scheduler = "flow_euler"', "not in schedulers"),
    ],
)
def test_an_entry_that_does_not_fit_its_family_is_refused(
    tmp_path: Path, family: str, extra: str, message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        load_catalog(write(tmp_path, entry_toml(family, extra)))


def test_txt2img_only_flow_models_may_use_the_multistep_solvers(tmp_path: Path) -> None:
    text = entry_toml("sd3", 'tasks = ["txt2img"]\nschedulers = ["unipc", "dpmpp_2m"]')
    assert load_catalog(write(tmp_path, text)).by_id["m"].scheduler == "unipc"


@pytest.mark.parametrize("family", FAMILIES)
def test_every_accepted_scheduler_builds_for_its_family(family: str) -> None:
    from worker.schedulers import make_scheduler

    rules = FAMILY_RULES[family]
    if rules.flow_matching:
        base = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
    else:
        base = {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear"}
    for name in rules.schedulers:
        scheduler = make_scheduler(name, base, flow_matching=rules.flow_matching)
        if rules.flow_matching and name != "flow_euler":
            assert scheduler.config.use_flow_sigmas and scheduler.config.flow_shift == 3.0
            assert scheduler.config.prediction_type == "flow_prediction"


def test_a_scheduler_of_the_wrong_kind_is_refused_by_the_worker() -> None:
    from worker.schedulers import make_scheduler

    with pytest.raises(ValueError, match="does not fit a flow-matching model"):
        make_scheduler("euler_a", {"shift": 3.0}, flow_matching=True)


def test_the_shipped_catalogue_has_a_demo_model_of_every_family() -> None:
    catalog = load_catalog(ROOT / "models.toml")
    # The default is the trained shapes model, committed.
    assert catalog.default_id == "shapes"
    shapes = catalog.by_id["shapes"]
    assert not shapes.demo and shapes.family == "sd1" and shapes.native_size == (64, 64)
    local = catalog.local_path(shapes)
    assert local is not None and (local / "model_index.json").exists()
    (outline,) = catalog.adapters_for(shapes)
    assert outline.id == "outline" and not outline.demo
    assert catalog.adapter_path(outline).is_file()
    demos = {m.family: m for m in catalog.models if m.demo}
    assert set(demos) == set(FAMILIES)
    assert demos["video"].tasks == ("txt2video",)
    assert demos["video"].native_size == (256, 256) and demos["video"].default_frames == 8


# -- adapters ------------------------------------------------------------------------------


def adapters_catalog(*adapters: dict[str, object]) -> Catalog:
    return Catalog.model_validate(
        {
            "models": [
                {"id": "one", "source": "/m/one", "family": "sd1"},
                {"id": "two", "source": "/m/two", "family": "sd1"},
                {"id": "xl", "source": "/m/xl", "family": "sdxl"},
            ],
            "adapters": list(adapters),
        }
    )


def test_adapters_fit_by_family_and_optionally_by_model() -> None:
    catalog = adapters_catalog(
        {"id": "ink", "source": "/a/ink.safetensors", "families": ["sd1"]},
        {"id": "only-two", "source": "/a/x", "families": ["sd1"], "models": ["two"]},
        {"id": "xl-style", "source": "/a/y", "families": ["sdxl"]},
    )
    fits = {m.id: [a.id for a in catalog.adapters_for(m)] for m in catalog.models}
    assert fits == {"one": ["ink"], "two": ["ink", "only-two"], "xl": ["xl-style"]}


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        ({"id": "a", "source": "/a", "families": []}, "list the families"),
        ({"id": "a", "source": "/a", "families": ["video"]}, "image families"),
        ({"id": "a", "source": "/a", "families": ["sd1"], "models": ["nope"]}, "unknown models"),
        ({"id": "a", "source": "/a", "families": ["sd1"], "demo": True}, "must name the models"),
        ({"id": "A b", "source": "/a", "families": ["sd1"]}, "lowercase"),
    ],
)
def test_bad_adapters_are_refused(adapter: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        adapters_catalog(adapter)


def test_adapter_ids_the_worker_would_refuse_are_refused_in_the_catalogue() -> None:
    # A dot is fine in a model id, not in an adapter's: peft keys the LoRA layers by it, and
    # the worker refuses it at load (worker.adapters), so the catalogue does first.
    with pytest.raises(ValueError, match="no dots"):
        adapters_catalog({"id": "style.v2", "source": "/a", "families": ["sd1"]})
    assert adapters_catalog({"id": "style_v2-b", "source": "/a", "families": ["sd1"]})


def test_adapter_ids_are_unique() -> None:
    entry = {"id": "a", "source": "/a", "families": ["sd1"]}
    with pytest.raises(ValueError, match="unique"):
        adapters_catalog(entry, entry)
