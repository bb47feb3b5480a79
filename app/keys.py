"""`python -m app.keys new NAME [--scope SCOPE]...`: make an API key and the entry for
LATENTQ_API_KEYS (with the key's scopes: `priority:high`, `admin`; see app.scopes)."""

from __future__ import annotations

import argparse
import secrets

from app.auth import hash_key
from app.scopes import EVERY_SCOPE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="a new key for NAME")
    new.add_argument("name", help="who the key is for (letters, digits, '.', '_', '-')")
    hashed = commands.add_parser("hash", help="the LATENTQ_API_KEYS entry of an existing key")
    hashed.add_argument("name")
    hashed.add_argument("key")
    for command in (new, hashed):
        command.add_argument(
            "--scope",
            action="append",
            default=[],
            choices=sorted(EVERY_SCOPE),
            help="a scope of the key (repeat for more); none: LATENTQ_DEFAULT_KEY_SCOPES",
        )
    args = parser.parse_args(argv)
    key = args.key if args.command == "hash" else "lq_" + secrets.token_urlsafe(32)
    if args.command == "new":
        print(f"key (give it to {args.name}; it is not stored anywhere): {key}")
    scopes = "".join(f"+{s}" for s in dict.fromkeys(args.scope))[1:]
    entry = f"{args.name}:{hash_key(key)}" + (f":{scopes}" if scopes else "")
    print(f"LATENTQ_API_KEYS entry: {entry}")


if __name__ == "__main__":
    main()
