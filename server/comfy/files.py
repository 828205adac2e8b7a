"""ComfyUI's three folders under the Takeflow home: ``comfyui/input``, ``output`` and ``temp``.

``input`` holds uploads (what LoadImage reads), ``output`` the SaveImage files
(``prefix_00001_.png``), ``temp`` the PreviewImage files. Takes stay the project's record (in
git); these folders are what ComfyUI clients read back through ``/view``. Every path a client
names is checked to stay inside its folder.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import threading
from pathlib import Path

FOLDER_TYPES = ("input", "output", "temp")
_COUNTER = re.compile(r"_(\d{5,})_\.png$")


class PathRefused(Exception):
    """A client path that would leave its folder; ``status`` is 400 or 403 (as ComfyUI)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ComfyFolders:
    def __init__(self, root: Path) -> None:
        self.root = root
        for name in FOLDER_TYPES:
            (root / name).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def folder(self, folder_type: str) -> Path:
        if folder_type not in FOLDER_TYPES:
            raise PathRefused(400, f"type must be one of {', '.join(FOLDER_TYPES)}")
        return self.root / folder_type

    def resolve(self, folder_type: str, subfolder: str, filename: str) -> Path:
        """The file a ``/view`` or upload names, refusing anything outside its folder."""
        if not filename or filename.startswith("/") or ".." in filename or "\\" in filename:
            raise PathRefused(400, "invalid filename")
        if "/" in filename or "\x00" in filename or "\x00" in subfolder:
            raise PathRefused(400, "invalid filename")
        base = self.folder(folder_type).resolve()
        directory = (base / subfolder).resolve() if subfolder else base
        if directory != base and base not in directory.parents:
            raise PathRefused(403, "subfolder leaves the folder")
        return directory / filename

    def input_files(self) -> list[str]:
        """Every file of the input folder by relative path (LoadImage's choices)."""
        base = self.folder("input")
        return sorted(
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def store_upload(
        self, folder_type: str, subfolder: str, filename: str, data: bytes, overwrite: bool
    ) -> str:
        """Write an upload; a clash with different bytes is renamed ``name (1).png``."""
        target = self.resolve(folder_type, subfolder, filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if not overwrite:
                stem, suffix = _split(filename)
                n = 0
                while target.exists():
                    if _sha(target.read_bytes()) == _sha(data):
                        return target.name  # the same file: reuse its name
                    n += 1
                    target = target.with_name(f"{stem} ({n}){suffix}")
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
            tmp.write_bytes(data)
            tmp.replace(target)
        return target.name

    def save_images(self, prefix: str, images: list[bytes]) -> list[tuple[str, str]]:
        """SaveImage: ``prefix_00001_.png`` and on, counting on from the files already there.
        Returns ``(filename, subfolder)`` per image."""
        return self._numbered("output", prefix, images)

    def temp_images(self, images: list[bytes]) -> list[tuple[str, str]]:
        """PreviewImage: ``ComfyUI_temp_<5 letters>_00001_.png`` in the temp folder."""
        tag = "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))
        return self._numbered("temp", f"ComfyUI_temp_{tag}", images)

    def _numbered(
        self, folder_type: str, prefix: str, images: list[bytes]
    ) -> list[tuple[str, str]]:
        subfolder, _, stem = prefix.replace("\\", "/").rpartition("/")
        directory = self.resolve(folder_type, subfolder, "x").parent
        directory.mkdir(parents=True, exist_ok=True)
        saved = []
        with self._lock:
            counter = 1 + max(
                (
                    int(m.group(1))
                    for p in directory.glob(f"{glob_escape(stem)}_*_.png")
                    if (m := _COUNTER.search(p.name)) and p.name == f"{stem}_{m.group(1)}_.png"
                ),
                default=0,
            )
            for data in images:
                name = f"{stem}_{counter:05}_.png"
                (directory / name).write_bytes(data)
                saved.append((name, subfolder))
                counter += 1
        return saved


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _split(filename: str) -> tuple[str, str]:
    stem, dot, suffix = filename.rpartition(".")
    return (stem, f".{suffix}") if dot and stem else (filename, "")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
