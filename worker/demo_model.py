"""Build tiny, randomly initialised pipelines of every model family entirely offline.

Each has the component layout, latent shape and VAE scale factor of a real checkpoint of its
family (`Family.tiny`, built from `worker.tiny`'s parts) but weighs a few megabytes, so the
service can be exercised end to end without downloading anything. Their images are noise.
The same seed always gives the same weights.

Usage: ``python -m worker.demo_model DIR [--family NAME] [--seed N] [--force]``
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from worker.families import FAMILIES, family_of


def build(family: str, out_dir: Path, *, seed: int = 0) -> Path:
    """Build the tiny model of ``family`` into ``out_dir`` (diffusers format) and return it."""
    try:
        pipe = family_of(family).tiny(seed)
    except ValueError:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def dir_size_mb(path: Path) -> float:
    """Total size of the files under ``path`` in megabytes (10**6 bytes)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point: build a tiny pipeline into DIR unless one is already there."""
    parser = argparse.ArgumentParser(
        prog="python -m worker.demo_model",
        description="Build a tiny random-weight pipeline for offline tests and demos.",
    )
    parser.add_argument("dir", type=Path, help="output folder")
    parser.add_argument(
        "--family", choices=tuple(FAMILIES), default="sd1", help="model family (default: sd1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if DIR has a model")
    args = parser.parse_args(argv)

    out_dir: Path = args.dir
    if (out_dir / "model_index.json").exists() and not args.force:
        print(f"already there: {out_dir} ({dir_size_mb(out_dir):.2f} MB)")
        return
    build(args.family, out_dir, seed=args.seed)
    print(f"built: {out_dir} ({dir_size_mb(out_dir):.2f} MB)")


if __name__ == "__main__":
    main()
