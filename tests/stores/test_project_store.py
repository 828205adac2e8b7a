"""One contract for a project's store (``ProjectStore``), run against a real project (a temp
folder with a real git repository, ``stores.projects.Project``) and the in-memory twin
(``graph_runtime.projects.MemoryProject``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from graph_runtime.errors import (
    AssetNotFoundError,
    ProjectError,
    ProjectFileNotFoundError,
    UnsafePathError,
)
from graph_runtime.projects import MemoryProject, ProjectAssets, ProjectStore
from graph_runtime.takes import OutputFile
from stores.projects import Project, ProjectCatalog

SHOT = "ch01/sc01/sh010"
UNSAFE = ["../outside.txt", "01_Assets/../../x", ".git/config", "a/.git/HEAD", "a\\b", "", "/"]


@pytest.fixture(params=["real", "memory"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProjectStore]:
    if request.param == "memory":
        yield MemoryProject("p1", "Project one")
    else:
        yield ProjectCatalog(tmp_path / "home").create("p1", "Project one")


def test_identity_and_info(project: ProjectStore) -> None:
    assert (project.id, project.name) == ("p1", "Project one")
    assert project.info()["project_id"] == "p1" and project.info()["name"] == "Project one"
    assert project.location("01_Assets/a.png").endswith("/p1/01_Assets/a.png")


def test_write_read_and_info_of_a_file(project: ProjectStore) -> None:
    project.write_file("02_Source_Creative/canvases/a.takeflow.json", b'{"a": 1}')
    assert project.is_file("02_Source_Creative/canvases/a.takeflow.json")
    assert project.read_file("02_Source_Creative/canvases/a.takeflow.json") == b'{"a": 1}'
    assert project.read_file("./02_Source_Creative//canvases/a.takeflow.json") == b'{"a": 1}'
    with project.open_file("02_Source_Creative/canvases/a.takeflow.json") as handle:
        assert handle.read() == b'{"a": 1}'
    info = project.file_info("02_Source_Creative/canvases/a.takeflow.json")
    assert (info.path, info.kind, info.size, info.name) == (
        "02_Source_Creative/canvases/a.takeflow.json",
        "file",
        8,
        "a.takeflow.json",
    )
    assert info.mtime is not None and info.mtime > 0
    assert project.file_info("02_Source_Creative/canvases").kind == "directory"
    assert not project.is_file("02_Source_Creative/canvases")


def test_write_replaces_in_one_step(project: ProjectStore) -> None:
    """Readers racing a rewrite see the old or the new bytes, never a part of either."""
    rel = "02_Source_Creative/canvases/big.takeflow.json"
    old, new = b"a" * 2_000_000, b"b" * 2_000_000
    project.write_file(rel, old)

    def read(_: int) -> bytes:
        return project.read_file(rel)

    with ThreadPoolExecutor(max_workers=2) as pool:
        reads = pool.map(read, range(30))
        for _ in range(5):
            project.write_file(rel, new)
            project.write_file(rel, old)
        assert set(reads) <= {old, new}
    assert project.read_file(rel) == old
    assert project.list_dir("05_Cache/tmp") == []  # no temporary file left behind


def test_writing_over_a_folder_is_refused(project: ProjectStore) -> None:
    project.write_file("04_Project_Files/x/y.txt", b"y")
    with pytest.raises(ProjectError, match="'04_Project_Files/x' is a folder of project 'p1'"):
        project.write_file("04_Project_Files/x", b"z")
    assert project.read_file("04_Project_Files/x/y.txt") == b"y"


def test_missing_files_are_named(project: ProjectStore) -> None:
    for read in (project.read_file, project.file_info, project.open_file):
        with pytest.raises(
            ProjectFileNotFoundError, match=re.escape("project 'p1' has no file 'no/such.txt'")
        ) as exc:
            read("no/such.txt")
        assert exc.value.code == "file_not_found" and exc.value.http_status == 404
        assert exc.value.details["path"] == "no/such.txt"
    assert not project.is_file("no/such.txt")
    assert project.list_dir("no/such") == []


def test_delete_removes_a_file_and_the_commit_records_it(project: ProjectStore) -> None:
    project.write_file("02_Source_Creative/canvases/a.json", b"{}")
    project.history.commit(["02_Source_Creative/canvases/a.json"], "add a")
    project.delete_file("02_Source_Creative/canvases/a.json")
    assert not project.is_file("02_Source_Creative/canvases/a.json")
    sha = project.history.commit(["02_Source_Creative/canvases/a.json"], "delete a")
    newest = project.history.recent_commits(1)[0]
    assert newest.sha == sha and newest.files == ["02_Source_Creative/canvases/a.json"]
    for missing in ("02_Source_Creative/canvases/a.json", "02_Source_Creative/canvases"):
        with pytest.raises(ProjectFileNotFoundError, match="has no file"):
            project.delete_file(missing)


def test_list_dir_names_files_and_folders(project: ProjectStore) -> None:
    project.write_file("06_Exports/b.txt", b"bb")
    project.write_file("06_Exports/a.txt", b"a")
    project.write_file("06_Exports/sub/c.txt", b"c")
    entries = project.list_dir("06_Exports")
    assert [(e.name, e.kind) for e in entries] == [
        ("a.txt", "file"),
        ("b.txt", "file"),
        ("sub", "directory"),
    ]
    assert [e.path for e in entries] == ["06_Exports/a.txt", "06_Exports/b.txt", "06_Exports/sub"]
    assert [e.size for e in entries[:2]] == [1, 2]


@pytest.mark.parametrize("rel", UNSAFE)
def test_every_verb_refuses_paths_that_leave_the_project(project: ProjectStore, rel: str) -> None:
    verbs = [
        lambda: project.read_file(rel),
        lambda: project.is_file(rel),
        lambda: project.file_info(rel),
        lambda: project.open_file(rel),
        lambda: project.list_dir(rel),
        lambda: project.write_file(rel, b"x"),
        lambda: project.delete_file(rel),
        lambda: project.location(rel),
    ]
    for verb in verbs:
        with pytest.raises(UnsafePathError, match="is not a file inside the project") as exc:
            verb()
        assert exc.value.code == "unsafe_path" and exc.value.details["field"] == "path"
    staged = project.stage_file()
    staged.write(b"x")
    with pytest.raises(UnsafePathError):
        staged.publish(rel)
    staged.discard()


def test_assets_are_read_by_reference_and_missing_ones_named(project: ProjectStore) -> None:
    project.write_file("01_Assets/refs/face.png", b"\x89PNG face")
    assert project.has_asset("asset://refs/face.png")
    assert project.read_asset("asset://refs/face.png") == b"\x89PNG face"
    assert ProjectAssets(project).read("asset://refs/face.png") == b"\x89PNG face"
    assert not project.has_asset("asset://refs/gone.png")
    with pytest.raises(
        AssetNotFoundError, match=re.escape("asset 'asset://refs/gone.png' is not in project 'p1'")
    ) as exc:
        project.read_asset("asset://refs/gone.png")
    assert exc.value.code == "asset_not_found" and exc.value.http_status == 404
    assert exc.value.details == {"asset": "asset://refs/gone.png", "project_id": "p1"}
    for bad in ("asset://../project.json", "asset://a/../../b", "asset://.git/config"):
        with pytest.raises(UnsafePathError, match="is not a valid asset id"):
            project.has_asset(bad)
        with pytest.raises(UnsafePathError, match="is not a valid asset id"):
            project.read_asset(bad)


def test_previews_are_stored_under_the_cache(project: ProjectStore) -> None:
    rel = project.write_preview("task1", "gen", 3, b"\x89PNG preview")
    assert rel == "05_Cache/previews/task1/gen_003.png"
    assert project.read_file(rel) == b"\x89PNG preview"
    with pytest.raises(UnsafePathError):
        project.write_preview("..", "..", 1, b"x")


def test_a_staged_file_is_invisible_until_published(project: ProjectStore) -> None:
    staged = project.stage_file()
    staged.write(b"part one, ")
    staged.write(b"part two")
    assert not project.is_file("01_Assets/uploads/u.bin")
    staged.publish("01_Assets/uploads/u.bin")
    assert project.read_file("01_Assets/uploads/u.bin") == b"part one, part two"
    assert project.has_asset("asset://uploads/u.bin")

    dropped = project.stage_file()
    dropped.write(b"never seen")
    dropped.discard()
    dropped.discard()  # twice is fine
    assert [e.name for e in project.list_dir("01_Assets/uploads")] == ["u.bin"]


def test_takes_are_files_of_the_project_and_committable(project: ProjectStore) -> None:
    files = [OutputFile("image", b"\x89PNG take", ".png", "image/png")]
    take = project.takes.create(SHOT, files, {"task_id": "t1"})
    assert take.take_id == "take_001" and take.active and take.project_id == "p1"
    assert project.read_file(take.outputs["image"].path) == b"\x89PNG take"
    assert project.is_file(f"{take.directory}/take.json")
    assert [t.take_id for t in project.takes.list(task_id="t1")] == ["take_001"]
    second = project.takes.create(SHOT, files, {"task_id": "t2"})
    assert not second.active
    assert project.takes.set_active(SHOT, "take_002").active
    sha = project.history.commit([take.directory.rsplit("/", 1)[0]], "takes of sh010")
    newest = project.history.recent_commits(1)[0]
    assert newest.sha == sha and newest.message == "takes of sh010"
    assert f"{take.directory}/take.json" in newest.files
    assert project.discard_staging() == 0  # nothing half-written
    assert project.history.recover() is None  # everything committed


def test_recover_commits_takes_that_missed_their_commit(project: ProjectStore) -> None:
    project.takes.create(SHOT, [OutputFile("n", b"1", ".json", "application/json")], {})
    sha = project.history.recover()
    assert sha is not None
    assert "Takeflow-Recovery: yes" in project.history.recent_commits(1)[0].message


def test_real_project_discards_takes_left_half_written(tmp_path: Path) -> None:
    project = ProjectCatalog(tmp_path / "home").create("p1")
    left = project.path / "05_Cache" / "staging" / "abc"
    left.mkdir(parents=True)
    (left / "image.png").write_bytes(b"half")
    assert project.discard_staging() == 1
    assert not left.exists()
    assert project.takes.list() == []


# -- symlinks (only a real project has them: the memory twin holds bytes, never links) --------


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[Project]:
    """A real project holding symlinks as a clone or a pull could bring them: out to a file and
    a folder of the machine, into ``.git``, and one inside the project."""
    project = ProjectCatalog(tmp_path / "home").create("p1", "Project one")
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    (outside / "dir" / "x.png").write_bytes(b"\x89PNG outside")
    root = project.path
    project.write_file("01_Assets/refs/face.png", b"\x89PNG face")
    (root / "01_Assets" / "passwd.png").symlink_to("/etc/passwd")
    (root / "01_Assets" / "secret.png").symlink_to(outside / "secret.txt")
    (root / "01_Assets" / "out").symlink_to(outside / "dir")
    (root / "04_Project_Files" / "gitlink").symlink_to("../.git")
    (root / "04_Project_Files" / "head").symlink_to("../.git/HEAD")
    (root / "01_Assets" / "inside.png").symlink_to("refs/face.png")
    (root / "01_Assets" / "refs2").symlink_to("refs")
    yield project


LINKS_OUT = [
    "01_Assets/passwd.png",
    "01_Assets/secret.png",
    "01_Assets/out",
    "01_Assets/out/x.png",
    "01_Assets/out/new.png",
    "04_Project_Files/gitlink",
    "04_Project_Files/gitlink/config",
    "04_Project_Files/head",
]


@pytest.mark.parametrize("rel", LINKS_OUT)
def test_every_verb_refuses_symlinks_that_leave_the_project_or_reach_git(
    linked: Project, rel: str, tmp_path: Path
) -> None:
    before = sorted(p.name for p in (tmp_path / "outside").rglob("*"))
    verbs = [
        lambda: linked.read_file(rel),
        lambda: linked.is_file(rel),
        lambda: linked.file_info(rel),
        lambda: linked.open_file(rel),
        lambda: linked.list_dir(rel),
        lambda: linked.write_file(rel, b"x"),
        lambda: linked.location(rel),
    ]
    for verb in verbs:
        with pytest.raises(UnsafePathError, match="is not a file inside the project") as exc:
            verb()
        assert exc.value.code == "unsafe_path" and exc.value.details["field"] == "path"
    staged = linked.stage_file()
    staged.write(b"x")
    with pytest.raises(UnsafePathError):
        staged.publish(rel)
    staged.discard()
    if rel.startswith("01_Assets/"):
        uri = "asset://" + rel.removeprefix("01_Assets/")
        with pytest.raises(UnsafePathError):
            linked.read_asset(uri)
        with pytest.raises(UnsafePathError):
            linked.has_asset(uri)
    assert sorted(p.name for p in (tmp_path / "outside").rglob("*")) == before
    assert (tmp_path / "outside" / "secret.txt").read_text() == "secret"
    assert linked.list_dir("05_Cache/tmp") == [] and linked.list_dir("05_Cache/uploads") == []


def test_a_folder_listing_leaves_out_symlinks_that_leave(linked: Project) -> None:
    names = [e.name for e in linked.list_dir("01_Assets")]
    assert "inside.png" in names and "refs" in names and "refs2" in names
    assert not {"passwd.png", "secret.png", "out"} & set(names)
    assert [e.name for e in linked.list_dir("04_Project_Files")] == [".gitkeep"]


def test_symlinks_that_stay_inside_the_project_are_followed(linked: Project) -> None:
    """The decision: a link resolving inside the project (not into ``.git``) is a file of it."""
    assert linked.read_file("01_Assets/inside.png") == b"\x89PNG face"
    assert linked.read_asset("asset://inside.png") == b"\x89PNG face"
    assert linked.read_asset("asset://refs2/face.png") == b"\x89PNG face"
    assert linked.file_info("01_Assets/refs2").kind == "directory"
    linked.write_file("01_Assets/refs2/new.png", b"new")
    assert (linked.path / "01_Assets" / "refs" / "new.png").read_bytes() == b"new"


def test_takes_are_never_written_or_read_through_a_symlink_out(
    linked: Project, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (linked.path / "03_Renders" / "ch01").symlink_to(elsewhere)
    files = [OutputFile("image", b"\x89PNG take", ".png", "image/png")]
    with pytest.raises(UnsafePathError):
        linked.takes.create(SHOT, files, {"task_id": "t1"})
    assert list(elsewhere.rglob("*")) == []
    # a take planted outside and reached through the link is not listed or read
    planted = elsewhere / "sc01" / "sh010" / "takes" / "take_001"
    planted.mkdir(parents=True)
    (planted / "take.json").write_text(
        '{"take_id": "take_001", "number": 1, "shot_id": "ch01/sc01/sh010", "outputs": {}}'
    )
    assert linked.takes.list() == []
    with pytest.raises(UnsafePathError):
        linked.takes.list(shot=SHOT)
    with pytest.raises(UnsafePathError):
        linked.takes.get(SHOT, "take_001")
