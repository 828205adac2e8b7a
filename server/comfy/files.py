"""ComfyUI's three folders under the Takeflow home: ``comfyui/input``, ``output`` and ``temp``.

``input`` holds uploads (what LoadImage reads), ``output`` the SaveImage files
(``prefix_00001_.png``), ``temp`` the PreviewImage files. Takes stay the project's record (in
git); these folders are what ComfyUI clients read back through ``/view``. Every path a client
names is checked to stay inside its folder and to be a name the filesystem can hold.

With auth on, each user has the three folders of their own under ``comfyui/users/<user>`` (a
``ComfyFolders`` per user): the names a client sees stay ComfyUI's, and no user can read or
overwrite another's files.
"""

from __future__ import annotations

import errno
import hashlib
import re
import secrets
import string
import threading
from pathlib import Path

FOLDER_TYPES = ("input", "output", "temp")
MAX_NAME_BYTES = 255  # one path component (NAME_MAX)
MAX_SUBFOLDER_BYTES = 1024
_COUNTER = re.compile(r"_(\d{5,})_(\.[A-Za-z0-9]+)$")  # any extension, as ComfyUI counts
_COUNTER_SUFFIX = len("_00001_.png")
# OS errors a client's name can cause (answered 400); others (disk full, permissions) are ours.
_NAME_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ELOOP}
)
_UNSAFE_USER = re.compile(r"[^A-Za-z0-9_.-]+")


class PathRefused(Exception):
    """A client path that is not acceptable: ``status`` 400 (or 403 for a subfolder outside its
    folder, as ComfyUI), a stable ``code`` and the ``field`` (``filename``, ``subfolder``,
    ``type``) the message names."""

    def __init__(self, status: int, message: str, code: str, field: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.field = field

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "field": self.field}


def user_folder(user: str) -> str:
    """The folder name of a user's files: readable, and distinct for distinct user names."""
    readable = _UNSAFE_USER.sub("_", user)[:64].strip("._") or "user"
    return f"{readable}-{hashlib.sha256(user.encode()).hexdigest()[:10]}"


def check_filename(filename: str, field: str = "filename") -> None:
    """One path component: not empty, no separator, no ``..``, not ``.``, at most 255 bytes."""
    if not filename or filename in (".", "..") or filename.startswith("/") or ".." in filename:
        raise PathRefused(400, f"invalid {field}: {filename[:80]!r}", f"invalid_{field}", field)
    if "/" in filename or "\\" in filename or "\x00" in filename:
        raise PathRefused(400, f"invalid {field}: {filename[:80]!r}", f"invalid_{field}", field)
    if len(filename.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise PathRefused(
            400, f"{field} is longer than {MAX_NAME_BYTES} bytes", f"invalid_{field}", field
        )


def check_subfolder(subfolder: str, field: str = "subfolder") -> None:
    """A relative folder: at most 1024 bytes, each part at most 255, no NUL."""
    if "\x00" in subfolder:
        raise PathRefused(
            400, f"invalid {field}: it holds a NUL character", f"invalid_{field}", field
        )
    size = len(subfolder.encode("utf-8", "surrogatepass"))
    parts = subfolder.replace("\\", "/").split("/")
    if size > MAX_SUBFOLDER_BYTES or any(
        len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for p in parts
    ):
        raise PathRefused(
            400,
            f"{field} is too long (at most {MAX_SUBFOLDER_BYTES} bytes, "
            f"{MAX_NAME_BYTES} per folder name)",
            f"invalid_{field}",
            field,
        )


def check_prefix(prefix: str, field: str = "filename_prefix") -> None:
    """SaveImage's ``filename_prefix``: a subfolder and a stem that fit the numbered names."""
    subfolder, _, stem = prefix.replace("\\", "/").rpartition("/")
    check_subfolder(subfolder, field)
    if len(stem.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES - _COUNTER_SUFFIX:
        raise PathRefused(
            400,
            f"{field} is too long (at most "
            f"{MAX_NAME_BYTES - _COUNTER_SUFFIX} bytes after the last '/')",
            f"invalid_{field}",
            field,
        )


def _oserror(exc: OSError, field: str) -> PathRefused:
    """A filesystem refusal caused by the client's name, as a 400 naming the field."""
    if exc.errno not in _NAME_ERRNOS:
        raise exc
    reason = {
        errno.ENOTDIR: "runs through a file",
        errno.EEXIST: "runs through a file",
        errno.EISDIR: "names a folder",
    }.get(exc.errno or 0, "is not a usable name")
    return PathRefused(400, f"invalid {field}: it {reason}", f"invalid_{field}", field)


class ComfyFolders:
    """The three folders under ``root`` (made at once unless ``create`` is false)."""

    def __init__(self, root: Path, create: bool = True) -> None:
        self.root = root
        if create:
            for name in FOLDER_TYPES:
                (root / name).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def folder(self, folder_type: str) -> Path:
        if folder_type not in FOLDER_TYPES:
            raise PathRefused(
                400, f"type must be one of {', '.join(FOLDER_TYPES)}", "invalid_type", "type"
            )
        return self.root / folder_type

    def resolve(self, folder_type: str, subfolder: str, filename: str) -> Path:
        """The file a ``/view`` or upload names, refusing anything outside its folder."""
        check_filename(filename)
        check_subfolder(subfolder)
        base = self.folder(folder_type).resolve()
        try:
            directory = (base / subfolder).resolve() if subfolder else base
        except OSError as exc:
            raise _oserror(exc, "subfolder") from None
        if directory != base and base not in directory.parents:
            raise PathRefused(
                403, "subfolder leaves the folder", "path_outside_folder", "subfolder"
            )
        return directory / filename

    def find(self, folder_type: str, subfolder: str, filename: str) -> Path | None:
        """``/view``: the named file, ``None`` when there is no such file."""
        path = self.resolve(folder_type, subfolder, filename)
        try:
            return path if path.is_file() else None
        except OSError:  # e.g. a subfolder that runs through a file
            return None

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
        """Write an upload; a clash with different bytes (or a folder) is renamed
        ``name (1).png``; with ``overwrite`` a folder of that name is refused."""
        target = self.resolve(folder_type, subfolder, filename)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _oserror(exc, "subfolder") from None
        with self._lock:
            if not overwrite:
                stem, suffix = _split(filename)
                n = 0
                while target.exists():
                    if target.is_file() and _sha(target.read_bytes()) == _sha(data):
                        return target.name  # the same file: reuse its name
                    n += 1
                    target = target.with_name(f"{stem} ({n}){suffix}")
                    check_filename(target.name)
            elif target.is_dir():
                raise PathRefused(
                    400, "invalid filename: it names a folder", "invalid_filename", "filename"
                )
            tmp = target.with_name(f".{secrets.token_hex(4)}.part")
            try:
                tmp.write_bytes(data)
                tmp.replace(target)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise _oserror(exc, "filename") from None
        return target.name

    def save_images(self, prefix: str, images: list[bytes]) -> list[tuple[str, str]]:
        """SaveImage: ``prefix_00001_.png`` and on, counting on from the files already there.
        Returns ``(filename, subfolder)`` per image."""
        return self._numbered("output", prefix, [(data, ".png") for data in images])

    def save_files(self, prefix: str, files: list[tuple[bytes, str]]) -> list[tuple[str, str]]:
        """SaveAnimatedWEBP, SaveWEBM, SaveVideo ...: ``prefix_00001_.webp`` (``(data,
        extension)`` each), one counter with the images of that prefix."""
        return self._numbered("output", prefix, files)

    def temp_images(self, images: list[bytes]) -> list[tuple[str, str]]:
        """PreviewImage: ``ComfyUI_temp_<5 letters>_00001_.png`` in the temp folder."""
        tag = "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))
        return self._numbered("temp", f"ComfyUI_temp_{tag}", [(data, ".png") for data in images])

    def _numbered(
        self, folder_type: str, prefix: str, images: list[tuple[bytes, str]]
    ) -> list[tuple[str, str]]:
        subfolder, _, stem = prefix.replace("\\", "/").rpartition("/")
        directory = self.resolve(folder_type, subfolder, "x").parent
        directory.mkdir(parents=True, exist_ok=True)
        saved = []
        with self._lock:
            counter = 1 + max(
                (
                    int(m.group(1))
                    for p in directory.glob(f"{glob_escape(stem)}_*_.*")
                    if (m := _COUNTER.search(p.name))
                    and p.name == f"{stem}_{m.group(1)}_{m.group(2)}"
                ),
                default=0,
            )
            for data, ext in images:
                while True:  # exclusive create: another replica may number in this folder too
                    name = f"{stem}_{counter:05}_{ext}"
                    counter += 1
                    try:
                        with (directory / name).open("xb") as file:
                            file.write(data)
                    except FileExistsError:
                        continue
                    break
                saved.append((name, subfolder))
        return saved


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _split(filename: str) -> tuple[str, str]:
    stem, dot, suffix = filename.rpartition(".")
    return (stem, f".{suffix}") if dot and stem else (filename, "")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
