"""``takeflow init DIR``: create a project folder (a git repository with LFS) in the home."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("init", help="create a project folder (git repository with LFS)")
    p.add_argument("project_dir")
    p.add_argument("--id", help="project id (default: the folder name)")
    p.add_argument("--name")
    p.set_defaults(fn=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    from stores.home import TakeflowHome
    from stores.projects import ProjectCatalog

    home = TakeflowHome.resolve(args.home)
    folder = Path(args.project_dir).resolve()
    project_id = args.id or folder.name.lower().replace(" ", "-")
    project = ProjectCatalog(home.path).create(project_id, args.name, folder)
    print(f"created project '{project.id}' in {project.path} (home {home.path})")
    return 0
