"""``takeflow token create|list|revoke``: bearer tokens for ``serve --auth``."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("token", help="bearer tokens for `serve --auth`")
    token_sub = p.add_subparsers(dest="token_command", required=True)
    t = token_sub.add_parser("create", help="create a token for a user and its projects")
    t.add_argument("--user", required=True)
    t.add_argument("--project", action="append", help="a project the token may use (repeatable)")
    t.add_argument("--all-projects", action="store_true", help="every project (an operator)")
    t.set_defaults(fn=cmd_token)
    t = token_sub.add_parser("list", help="tokens of this home (ids, users, projects)")
    t.set_defaults(fn=cmd_token)
    t = token_sub.add_parser("revoke", help="remove a token by its id")
    t.add_argument("token_id")
    t.set_defaults(fn=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    from server.auth import ALL_PROJECTS, TokenStore
    from stores.home import TakeflowHome

    store = TokenStore(TakeflowHome.resolve(args.home).path)
    if args.token_command == "create":
        projects = [ALL_PROJECTS] if args.all_projects else list(args.project or [])
        token, entry = store.create(args.user, projects)
        print(
            f"token {entry['id']} for user '{entry['user']}' "
            f"(projects: {', '.join(entry['projects'])}); shown once, keep it secret:",
            file=sys.stderr,
        )
        print(token)
        return 0
    if args.token_command == "list":
        for entry in store.list():
            print(f"{entry['id']}  {entry['user']:<20} {', '.join(entry['projects'])}")
        return 0
    if store.revoke(args.token_id):
        print(f"revoked token {args.token_id}")
        return 0
    print(f"error: no token {args.token_id}", file=sys.stderr)
    return 1
