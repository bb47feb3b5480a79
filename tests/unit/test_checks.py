"""The checks of a job against the catalogue that the API and the worker both run."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.catalog import Catalog
from jobs.checks import Misfit, check_fits, check_job, check_resolved, total_steps
from jobs.protocol import parse_params

CATALOG = Catalog.model_validate(
    {
        "models": [
            {
                "id": "img",
                "source": "/m/img",
                "family": "sd1",
                "tasks": ["txt2img", "img2img"],
                "schedulers": ["euler", "pndm"],
            },
            {
                "id": "vid",
                "source": "/m/vid",
                "family": "video",
                "max_frames": 17,
                "default_frames": 9,
            },
        ],
        "adapters": [
            {"id": "ink", "source": "/a/ink", "families": ["sd1"]},
            {"id": "xl", "source": "/a/xl", "families": ["sdxl"]},
        ],
    }
)


def params(**fields: Any) -> Any:
    body = {"type": "txt2img", "model": "img", "prompt": "p", "steps": 4, "scheduler": "euler"}
    return parse_params({**body, **fields})


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"type": "inpaint"}, "type", "model img does not do inpaint; it does txt2img, img2img"),
        ({"loras": [{"id": "xl"}]}, "loras", "adapter 'xl' does not fit model img"),
        ({"loras": [{"id": "nope"}]}, "loras", "'nope' is not in the catalogue"),
        ({"scheduler": "ddim"}, "scheduler", "'ddim' is not available for model img"),
    ],
)
def test_what_a_model_cannot_do_is_a_misfit_naming_the_field(
    fields: dict[str, Any], param: str, message: str
) -> None:
    body = dict(fields)
    if body.get("type") == "inpaint":
        body |= {"strength": 1.0}
    job = params(**body)
    with pytest.raises(Misfit, match=message) as caught:
        check_job(CATALOG, job)
    assert caught.value.param == param
    with pytest.raises(Misfit):
        check_fits(CATALOG, CATALOG.by_id["img"], job)


def test_limits_of_the_filled_in_job() -> None:
    model = CATALOG.by_id["img"]
    check_resolved(model, params(scheduler="pndm", steps=4))
    with pytest.raises(Misfit, match="needs at least 4 denoising steps; this job would run 2"):
        check_resolved(model, params(scheduler="pndm", steps=2))
    # img2img at strength 0.5 runs half its steps.
    half = params(type="img2img", scheduler="pndm", steps=6, strength=0.5)
    assert total_steps(half) == 3
    with pytest.raises(Misfit, match="would run 3"):
        check_resolved(model, half)
    video = CATALOG.by_id["vid"]
    body = {"type": "txt2video", "model": "vid", "scheduler": "unipc", "steps": 4}
    check_resolved(video, params(**body, num_frames=17))
    with pytest.raises(Misfit, match="at most 17 frames") as caught:
        check_resolved(video, params(**body, num_frames=21))
    assert caught.value.param == "num_frames"


def test_a_job_that_fits_passes_and_an_unknown_model_does_not() -> None:
    check_job(CATALOG, params(loras=[{"id": "ink", "scale": 0.5}]))
    with pytest.raises(Misfit, match="not in the catalogue") as caught:
        check_job(CATALOG, params(model="gone"))
    assert caught.value.param == "model"
