"""`python -m sandbox migrate | seed | make-code-dir`: stand up the stand-in service."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from sandbox.code_dir import make_code_dir
from sandbox.migrate import migrate
from sandbox.seed import seed, write_env_file, write_keys


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("migrate", help="run the sandbox's Alembic chain")
    m.add_argument("--database-url", required=True)
    m.add_argument("--revision", "--to", dest="revision", default="head")
    m.add_argument("--down", action="store_true", help="downgrade to the revision")
    s = sub.add_parser("seed", help="seed N clients at the Phase 3 head + their directory CSV")
    s.add_argument("--database-url", required=True)
    s.add_argument("--clients", type=int, required=True)
    s.add_argument("--sessions-per-client", type=int, default=3)
    s.add_argument("--assistants-per-client", type=int, default=1)
    s.add_argument("--without-contact", type=int, default=0)
    s.add_argument("--directory-csv", "--directory", dest="directory_csv", type=Path,
                   required=True)
    s.add_argument("--keys-out", type=Path, help="write the Phase 3 keys (tests only)")
    s.add_argument("--shared-key-env-file", type=Path, default=None,
                   help="one door key for every client (the real service's model), written "
                   "as API_KEY to this dotenv file")
    w = sub.add_parser("warm-cache", help="cache every session in Redis as the service does")
    w.add_argument("--database-url", required=True)
    w.add_argument("--redis-url", required=True)
    w.add_argument("--prefix", default="")
    c = sub.add_parser("make-code-dir", help="a git repo tagged phase-2 / phase-3")
    c.add_argument("path", type=Path)
    args = parser.parse_args()
    if args.command == "migrate":
        asyncio.run(migrate(args.database_url, args.revision, down=args.down))
    elif args.command == "seed":
        result = asyncio.run(seed(
            args.database_url, args.clients, sessions_per_client=args.sessions_per_client,
            assistants_per_client=args.assistants_per_client,
            without_contact=args.without_contact, directory_csv=args.directory_csv,
            shared_key=args.shared_key_env_file is not None))
        if args.keys_out:
            write_keys(args.keys_out, result.clients)
        if args.shared_key_env_file is not None:
            write_env_file(args.shared_key_env_file, result.clients[0].key)
        print(f"seeded {len(result.clients)} clients; directory {args.directory_csv}")
    elif args.command == "warm-cache":
        from sandbox.cache import warm_cache

        count = asyncio.run(warm_cache(args.database_url, args.redis_url, args.prefix))
        print(f"cached {count} sessions in Redis")
    else:
        print(make_code_dir(args.path))


if __name__ == "__main__":
    main()
