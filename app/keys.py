"""`python -m app.keys new NAME`: make an API key and the entry for LATENTQ_API_KEYS."""

from __future__ import annotations

import argparse
import secrets

from app.auth import hash_key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="a new key for NAME")
    new.add_argument("name", help="who the key is for (letters, digits, '.', '_', '-')")
    hashed = commands.add_parser("hash", help="the LATENTQ_API_KEYS entry of an existing key")
    hashed.add_argument("name")
    hashed.add_argument("key")
    args = parser.parse_args(argv)
    key = args.key if args.command == "hash" else "lq_" + secrets.token_urlsafe(32)
    if args.command == "new":
        print(f"key (give it to {args.name}; it is not stored anywhere): {key}")
    print(f"LATENTQ_API_KEYS entry: {args.name}:{hash_key(key)}")


if __name__ == "__main__":
    main()
