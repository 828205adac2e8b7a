"""``takeflow init DIR``: create a project folder (a git repository with LFS) in the home.

It also lays out the home's Dagster instance (``<home>/dagster/dagster.yaml``), so that
``DAGSTER_HOME=<home>/dagster dagster dev -w workspace.yaml`` works right after it.
"""

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
    from dagster_defs.instance import write_instance_config
    from graph_runtime.takes import project_id_from_name
    from stores.home import TakeflowHome
    from stores.projects import ProjectCatalog

    home = TakeflowHome.resolve(args.home)
    folder = Path(args.project_dir).resolve()
    project_id = args.id or project_id_from_name(folder.name)
    project = ProjectCatalog(home.path).create(project_id, args.name, folder)
    write_instance_config(home.dagster_home)
    print(f"created project '{project.id}' in {project.path} (home {home.path})")
    return 0
