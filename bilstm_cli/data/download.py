"""Fetching the built-in data sets: look-up, download with progress, checksum, atomic rename.

Where an archive is looked for, in order: `$BILSTM_DATA_DIR` (a file the user put there is trusted
without a checksum, since it may be a repackaged copy, but its layout is checked), then the user
cache (`$XDG_CACHE_HOME/bilstm`, default `~/.cache/bilstm`). When neither has it, it is downloaded
into the cache: into a temporary file first, hashed while it streams, and renamed to its final
name only once its size and checksum are right. A failed or interrupted download therefore never
leaves a file that looks complete.

`BILSTM_DATA_URL_<NAME>` (e.g. `BILSTM_DATA_URL_IMDB`) replaces a set's address: a local mirror,
or the tests' local HTTP server. The checksum stays the published one.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bilstm_cli import console as ui
from bilstm_cli.errors import UserError

CHUNK = 1 << 16


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    filename: str
    url: str
    checksum: tuple[str, str]  # (hashlib algorithm, hex digest) of the published file
    splits: tuple[str, ...]
    description: str


BUILTIN = {
    "imdb": BuiltinDataset(
        "imdb",
        "aclImdb_v1.tar.gz",
        "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        ("sha256", "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"),
        ("train", "test"),
        "Large Movie Review Dataset: 25,000 train / 25,000 test reviews, binary sentiment",
    ),
    "sst2": BuiltinDataset(
        "sst2",
        "SST-2.zip",
        "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
        ("md5", "9f81648d4199384278b86e315dac217c"),
        ("train", "test"),
        "Stanford Sentiment Treebank (GLUE SST-2): 67,349 train phrases / 872 dev sentences "
        "(used as test)",
    ),
}

# Progress callback: (bytes so far, total bytes or None). By default a rich progress bar on
# stderr (plain lines when stderr is not a terminal).
Progress = Callable[[int, int | None], None]


def user_data_dir() -> Path | None:
    value = os.environ.get("BILSTM_DATA_DIR")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bilstm"


def search_dirs() -> list[Path]:
    """Where a data set archive is looked for: $BILSTM_DATA_DIR, then the user cache."""
    user = user_data_dir()
    return ([user] if user else []) + [cache_dir()]


def url_for(name: str) -> str:
    return os.environ.get(f"BILSTM_DATA_URL_{name.upper()}") or BUILTIN[name].url


@dataclass(frozen=True)
class Located:
    path: Path
    where: str  # "data dir" (placed by the user) | "cache" (downloaded and verified)


def locate(name: str) -> Located | None:
    """The archive if it is already here, without downloading."""
    info = BUILTIN[name]
    user = user_data_dir()
    if user is not None and (user / info.filename).is_file():
        return Located(user / info.filename, "data dir")
    cached = cache_dir() / info.filename
    if cached.is_file():
        return Located(cached, "cache")
    return None


def ensure_archive(name: str, progress: Progress | None = None, download: bool = True) -> Path:
    """The archive's path: found in BILSTM_DATA_DIR or the cache, or downloaded into the cache."""
    if name not in BUILTIN:
        raise UserError(f"unknown data set {name!r}: the built-in sets are "
                        f"{', '.join(BUILTIN)}")
    found = locate(name)
    if found is not None:
        return found.path
    if not download:
        raise UserError(_missing_message(name, "downloads are turned off"))
    return fetch(name, progress)


def fetch(name: str, progress: Progress | None = None) -> Path:
    """Download into the cache, verify the checksum, and only then give it its final name."""
    info = BUILTIN[name]
    url = url_for(name)
    target = cache_dir() / info.filename
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the cache folder {target.parent}: {exc.strerror}; "
                        "set XDG_CACHE_HOME or BILSTM_DATA_DIR to a writable folder") from None
    _remove_stale_parts(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{info.filename}.", suffix=".part",
                                    dir=target.parent)
    tmp = Path(tmp_name)
    try:
        shown = (nullcontext(progress) if progress is not None
                 else ui.download_progress(f"downloading {info.filename}"))
        with os.fdopen(fd, "wb") as out, shown as report:
            digest, size, expected = _stream(url, out, info.checksum[0], report, name)
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and size != expected:
            raise UserError(
                f"the download of {url} was interrupted: {size:,} of {expected:,} bytes "
                f"arrived. Run `bilstm data get {name}` again (nothing was kept)."
            )
        algorithm, wanted = info.checksum
        if digest != wanted:
            raise UserError(
                f"the download of {url} is not the expected file: its {algorithm.upper()} is "
                f"{digest}, expected {wanted} (nothing was kept). Try again, or download it "
                f"yourself and put it in BILSTM_DATA_DIR."
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# A download in progress writes every few seconds; a part file untouched this long was left by
# a process that was killed (kill -9, power loss) before it could remove it.
STALE_PART_SECONDS = 3600


def _remove_stale_parts(target: Path) -> None:
    """Delete what killed downloads of this file left, never another live download's file."""
    now = time.time()
    for part in target.parent.glob(f".{target.name}.*.part"):
        try:
            if now - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
        except OSError:
            pass  # gone already, or not ours to delete: the download goes on regardless


def _stream(
    url: str, out: Any, algorithm: str, progress: Progress, name: str
) -> tuple[str, int, int | None]:
    """Copy the response body to `out`, hashing it; (hex digest, bytes, Content-Length)."""
    hasher = hashlib.new(algorithm)
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - http(s) only
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            progress(0, expected)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                size += len(chunk)
                progress(size, expected)
    except urllib.error.HTTPError as exc:
        raise UserError(_missing_message(name, f"{url} answered HTTP {exc.code} {exc.reason}")
                        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        if size:
            raise UserError(f"the download of {url} was interrupted after {size:,} bytes "
                            f"({reason}); run `bilstm data get {name}` again (nothing was kept)"
                            ) from None
        raise UserError(_missing_message(name, f"cannot reach {url} ({reason})")) from None
    except OSError as exc:  # http.client.IncompleteRead and friends, or a full disk
        raise UserError(f"the download of {url} failed after {size:,} bytes ({exc}); nothing "
                        "was kept") from None
    return hasher.hexdigest(), size, expected


def _missing_message(name: str, why: str) -> str:
    info = BUILTIN[name]
    user = user_data_dir()
    places = f"{user} (BILSTM_DATA_DIR) or {cache_dir()}" if user else str(cache_dir())
    return (
        f"data set {name!r} is not available and could not be downloaded: {why}. "
        f"Download {info.filename} from {url_for(name)} and put it in {places} "
        f"(or set BILSTM_DATA_DIR to the folder that holds it)."
    )


# What reading a damaged archive raises: gzip's BadGzipFile is an OSError, a cut gzip stream an
# EOFError, bad deflate data a zlib.error.
ARCHIVE_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile)

ZIP_METHODS = {9: "Deflate64", 6: "Implode", 98: "PPMd", 95: "XZ", 93: "Zstandard"}


def unreadable(name: str, path: Path, exc: BaseException) -> UserError:
    """A damaged archive: which file, what failed, and how to get a good one."""
    return UserError(
        f"{path}: cannot read the {name} archive ({exc}); is it complete? Replace it with the "
        f"file from {url_for(name)}, or delete it and run `bilstm data get {name}`"
    )


def read_member(archive: zipfile.ZipFile, path: Path, name: str, member: str) -> bytes:
    """A zip member's bytes (its CRC checked); a member Python's zipfile cannot decompress or
    decrypt is one clear error, not a NotImplementedError or RuntimeError."""
    info = archive.getinfo(member)
    method = ZIP_METHODS.get(info.compress_type, "unknown")
    try:
        return archive.read(info)
    except NotImplementedError:
        raise UserError(
            f"{path}: {member} is compressed with a method Python cannot read ({method}, "
            f"method {info.compress_type}); repack the archive with plain Deflate (unzip it, "
            f"then `zip -r {path.name} SST-2`), or delete it and run `bilstm data get {name}`"
        ) from None
    except RuntimeError:  # zipfile: "File ... is encrypted, password required"
        raise UserError(
            f"{path}: {member} is encrypted; use an archive without a password (the file from "
            f"{url_for(name)})"
        ) from None


def verify_archive(name: str, found: Located) -> None:
    """That an archive already here can be read. A downloaded one (cache) must still have its
    published checksum; a user's (data dir) needs none, but must have the layout the loader
    reads, and every byte of it must decompress."""
    path = found.path
    if found.where == "cache":
        algorithm, wanted = BUILTIN[name].checksum
        digest = hashlib.new(algorithm)
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:
            raise unreadable(name, path, exc) from None
        if digest.hexdigest() != wanted:
            raise UserError(f"{path}: the cached {name} archive is damaged (its "
                            f"{algorithm.upper()} is {digest.hexdigest()}, expected {wanted})")
        return
    check_layout(name, path)
    try:
        if name == "sst2":
            with zipfile.ZipFile(path) as archive:
                for member in ("SST-2/train.tsv", "SST-2/dev.tsv"):
                    read_member(archive, path, name, member)
        else:
            with gzip.open(path, "rb") as stream:
                while stream.read(1 << 20):
                    pass
    except ARCHIVE_ERRORS as exc:
        raise unreadable(name, path, exc) from None


def check_layout(name: str, path: Path) -> None:
    """A user-placed archive needs no checksum, but it must hold the files the loader reads."""
    try:
        if name == "sst2":
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
            missing = [m for m in ("SST-2/train.tsv", "SST-2/dev.tsv") if m not in names]
        else:
            missing = _imdb_missing_folders(path)
    except ARCHIVE_ERRORS as exc:
        raise unreadable(name, path, exc) from None
    if missing:
        raise UserError(
            f"{path} does not have the layout of {BUILTIN[name].filename}: "
            f"{', '.join(missing)} missing. Replace it with the file from {BUILTIN[name].url}."
        )


def _imdb_missing_folders(path: Path) -> list[str]:
    """Scan the tar until every aclImdb/{train,test}/{pos,neg}/ folder has shown a review."""
    wanted = {f"aclImdb/{split}/{label}/" for split in ("train", "test")
              for label in ("pos", "neg")}
    with tarfile.open(path, mode="r:gz") as archive:
        for member in archive:
            folder = member.name.rsplit("/", 1)[0] + "/"
            if member.isfile() and member.name.endswith(".txt") and folder in wanted:
                wanted.discard(folder)
                if not wanted:
                    break
    return sorted(wanted)
