"""``python -m serving.keys``: create, list and revoke the scoring API's keys (``serving.auth``).

```
python -m serving.keys create --id shop --scopes events:write,recs:read   # prints the key once
python -m serving.keys list                                               # ids, scopes, dates (never a key)
python -m serving.keys revoke --id shop
python -m serving.keys local                                              # the local development key
```

``local`` makes sure the key ``local`` (every scope) exists and prints it; unlike other keys, its
plain text is kept for the command-line clients of this machine (``make run``'s examples,
``python -m jobs.shoppers``, the benchmarks) in ``<home>/serving/local-api-key`` (mode 0600, like
``.env``), read by ``core.client.api_key`` when ``RECSYS_API_KEY`` is not set. Revoke it (``revoke
--id local``) on any machine others can reach.

The keys file is ``RECSYS_API_KEYS_FILE`` (default ``<home>/serving/api-keys.json``); a running API
picks a change up within seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.client import local_key_path
from serving.auth import SCOPES, KeyFileError, KeyRing, add_key, read_keys_file, write_keys
from serving.settings import serving_settings

LOCAL_ID = "local"


def ensure_local_key(keys_file: Path, key_path: Path) -> str:
    """The local development key: the one in ``key_path`` while ``keys_file`` still accepts it, else a new one."""
    try:
        held = key_path.read_text().strip()
    except FileNotFoundError:
        held = ""
    if held and KeyRing(path=keys_file).verify(held) is not None:
        return held
    key = add_key(keys_file, LOCAL_ID, SCOPES)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = key_path.with_name(f".{key_path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.replace(tmp, key_path)
    return key


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.keys", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key, store its hash, print the key once")
    create.add_argument("--id", required=True, help="who the key is for (a-z, 0-9, '-')")
    create.add_argument("--scopes", required=True, help=f"comma-separated, of {', '.join(SCOPES)}")
    sub.add_parser("list", help="the keys' ids and scopes")
    revoke = sub.add_parser("revoke", help="remove a key")
    revoke.add_argument("--id", required=True)
    sub.add_parser("local", help="the local development key (every scope; its text kept in <home>/serving)")
    args = p.parse_args(argv)
    path = serving_settings().keys_file
    try:
        if args.command == "create":
            print(add_key(path, args.id, args.scopes.split(",")))
            print(f"stored its hash in {path}; the key is not kept anywhere: copy it now", file=sys.stderr)
        elif args.command == "local":
            print(ensure_local_key(path, local_key_path(serving_settings().home)))
            print(f"kept in {local_key_path(serving_settings().home)} for this machine's clients", file=sys.stderr)
        elif args.command == "list":
            for key in read_keys_file(path):
                print(f"{key.key_id}\t{','.join(sorted(key.scopes))}\t{key.created_at}")
        else:
            keys = read_keys_file(path)
            if not any(k.key_id == args.id for k in keys):
                print(f"no key {args.id!r} in {path}", file=sys.stderr)
                return 2
            write_keys(path, [k for k in keys if k.key_id != args.id])
            print(f"revoked {args.id}")
    except KeyFileError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
