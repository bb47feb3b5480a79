"""The shapes scene set, its judge, its tokenizer and a training smoke run."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np

from worker.shapes import scenes as s
from worker.shapes.judge import judge, score


def test_judge_reads_the_scene_sets_own_renders():
    rendered = list(s.scenes(4242, 300, two_shapes=0.4))
    exact = sum(judge(s.render(scene)).matches(scene) for scene in rendered)
    assert exact / len(rendered) >= 0.99
    outlined = list(s.scenes(77, 200, style="outline"))
    verdicts = [judge(s.render(scene)) for scene in outlined]
    exact = sum(v.matches(scene) for v, scene in zip(verdicts, outlined, strict=True))
    assert exact / len(outlined) >= 0.98
    for verdict in verdicts:
        # Large shapes are drawn as rings, small ones stay filled.
        assert [f.outline for f in verdict.shapes] == [f.size == "large" for f in verdict.shapes]
    assert not any(f.outline for sc in rendered[:40] for f in judge(s.render(sc)).shapes)


def test_judge_says_what_is_wrong():
    scene = s.Scene("blue", (s.Shape("red", "circle", "left", "large"),))
    verdict = judge(s.render(scene))
    assert score(s.Shape("red", "circle", "left", "large"), "blue", verdict).all
    wrong = score(s.Shape("green", "square", "right", "small"), "white", verdict)
    assert not (wrong.colour or wrong.kind or wrong.position or wrong.size or wrong.background)
    # An empty canvas: no shape, so nothing asked for is there.
    empty = judge(np.full((s.SIZE, s.SIZE, 3), s.COLOURS["white"], dtype=np.uint8))
    assert empty.background == "white" and empty.shapes == ()
    assert not score(s.Shape("red", "circle", "left", "large"), "white", empty).colour


def test_renders_are_deterministic_and_shapes_do_not_touch():
    first = [s.render(scene) for scene in s.scenes(5, 20)]
    again = [s.render(scene) for scene in s.scenes(5, 20)]
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    for scene in s.scenes(6, 400, two_shapes=1.0):
        assert len(scene.shapes) == 2
        assert scene.shapes[0].position != scene.shapes[1].position
        assert all(shape.colour != scene.background for shape in scene.shapes)


def test_captions_vary_and_name_what_they_show():
    scene = s.Scene("blue", (s.Shape("red", "circle", "top left", "small"),))
    rng = random.Random(0)
    captions = [s.caption(scene, rng) for _ in range(200)]
    assert len(set(captions)) > 40
    assert all("red circle" in c for c in captions)
    assert Counter("blue" in c for c in captions)[True] > 100  # the background, mostly named
    assert Counter("left" in c for c in captions)[True] > 150
    full = s.caption(scene, rng, complete=True)
    assert all(word in full for word in ("small", "red", "circle", "top left", "blue background"))
    assert s.prompt(scene.shapes[0], "orange") == (
        "a small red circle in the top left corner on an orange background"
    )


def test_held_out_combinations_never_reach_training():
    training = list(s.scenes(1, 3000))
    assert not any(s.is_held_out(shape, sc.background) for sc in training for shape in sc.shapes)
    held = [s.random_scene(random.Random(i), held_out=True) for i in range(50)]
    assert all(s.is_held_out(sc.shapes[0], sc.background) for sc in held)
    combos = {
        (c, k, p, b)
        for c in s.COLOURS
        for k in s.KINDS
        for p in s.POSITIONS
        for b in s.COLOURS
        if b != c
    }
    share = sum(s.is_held_out(s.Shape(c, k, p, "small"), b) for c, k, p, b in combos) / len(combos)
    assert 0.03 < share < 0.08


def test_every_word_of_the_captions_is_one_token():
    from worker.shapes.model import build_tokenizer

    tokenizer = build_tokenizer()
    text = "a small red circle in the top left corner on an orange background"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text.split())
    # Words outside the vocabulary still encode, byte by byte.
    assert len(tokenizer("zebra", add_special_tokens=False).input_ids) > 1


def test_the_unet_loss_weighs_the_cells_under_a_shape_more():
    from worker.shapes import train
    from worker.shapes.model import LATENT_SIDE

    scene = s.Scene("blue", (s.Shape("red", "circle", "top left", "small"),), ((0.0, 0.0),))
    (weights,) = train._shape_cells([scene])
    assert weights.shape == (1, LATENT_SIDE, LATENT_SIDE)
    corner = LATENT_SIDE // 4
    assert weights[0, corner, corner] == 1 + train.SHAPE_WEIGHT
    assert weights[0, -1, -1] == 1 and weights[0, LATENT_SIDE // 2 + 2, 0] == 1
    assert (weights > 1).float().mean() < 0.2


def test_text_encoder_targets_name_each_shape_in_caption_order():
    from worker.shapes import train

    first = s.Shape("red", "circle", "left", "small")
    second = s.Shape("blue", "triangle", "right", "large")
    two = train._label_targets(s.Scene("white", (first, second), ((0, 0), (0, 0))))
    one = train._label_targets(s.Scene("white", (first,), ((0, 0),)))
    sizes = train._label_head_sizes()
    assert len(two) == len(one) == len(sizes)
    assert all(0 <= t < n for t, n in zip(two, sizes, strict=True))
    assert two[:5] == one[:5] and two[5:] != one[5:]
    # A missing second shape is each attribute's extra last class.
    assert one[5:] == [n - 1 for n in sizes[5:]]


def test_training_smoke_run_learns_and_saves_an_ordinary_pipeline(tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    from worker.shapes import train

    out, work = tmp_path / "model", tmp_path / "work"
    args = [str(out), "--work", str(work), "--vae-steps", "8", "--scenes", "64"]
    args += ["--steps", "40", "--batch", "16", "--log-every", "10", "--eval-every", "0"]
    args += ["--decoder-steps", "2", "--text-steps", "20"]
    assert train.main([*args, "--threads", "1"]) == 0
    assert (work / "text.pt").exists()
    losses = [json.loads(line)["loss"] for line in (work / "loss.jsonl").read_text().splitlines()]
    assert len(losses) == 4
    assert losses[-1] < losses[0] * 0.8, losses
    assert (out / "model_index.json").exists()
    pipe = StableDiffusionPipeline.from_pretrained(str(out), torch_dtype=torch.float32)
    saved = torch.load(work / "unet.pt", weights_only=False)["ema_unet"]
    for name, tensor in pipe.unet.state_dict().items():
        assert torch.allclose(tensor, saved[name].to(torch.float16).float()), name
    image = pipe(
        "a red circle on the left",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert image.shape == (s.SIZE, s.SIZE, 3)
    # A job may switch to DDIM: built from the saved config, it must not clip the latents.
    assert pipe.scheduler.config.clip_sample is False
    # Resuming a finished run trains nothing more and saves the same weights.
    assert train.main([*args, "--threads", "1"]) == 0
    again = StableDiffusionPipeline.from_pretrained(str(out), torch_dtype=torch.float32)
    for name, tensor in again.unet.state_dict().items():
        assert torch.equal(tensor, pipe.unet.state_dict()[name]), name
