"""Stable scheduler names → diffusers schedulers, built per job from the model's config.

Two kinds of model: UNet models trained to predict noise (epsilon) or velocity (sd1, sdxl),
and flow-matching transformers (sd3, flux, Wan video). A flow-matching model takes
`flow_euler`, and `unipc` / `dpmpp_2m` in their flow-sigma form; which family takes which name
is the catalogue's rule (`FamilyRules.schedulers` in `jobs.families.FAMILY_RULES`).
"""

from __future__ import annotations

from typing import Any

# name: (diffusers class, config overrides), for noise- or velocity-predicting models.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
    ),
    "dpmpp_sde": ("DPMSolverSinglestepScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),
}

_FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}

# name: (diffusers class, config overrides), for flow-matching models.
FLOW_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", _FLOW_SIGMAS),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {**_FLOW_SIGMAS, "algorithm_type": "dpmsolver++"}),
}


def make_scheduler(name: str, base_config: Any, *, flow_matching: bool = False) -> Any:
    """A fresh scheduler: its state (timesteps, step index) belongs to one job only.

    `flow_matching` picks the flow-sigma form of a name, and carries the model's time shift
    across the two ways diffusers spells it (`shift` on FlowMatchEuler, `flow_shift` on the
    multistep solvers), so every scheduler of a flow model runs the schedule it was trained on.
    """
    import diffusers

    table = FLOW_SCHEDULERS if flow_matching else SCHEDULERS
    try:
        class_name, overrides = table[name]
    except KeyError:
        kind = "flow-matching" if flow_matching else "noise-predicting"
        raise ValueError(f"scheduler {name!r} does not fit a {kind} model") from None
    cls = getattr(diffusers, class_name)
    config = dict(base_config)
    if flow_matching:
        shift = config.pop("shift", None)
        shift = config.pop("flow_shift", shift if shift is not None else 1.0)
        config["shift" if class_name == "FlowMatchEulerDiscreteScheduler" else "flow_shift"] = shift
    return cls.from_config(config, **overrides)
