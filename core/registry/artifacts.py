"""Content-addressed artifact store: every file is kept once under `sha256/<ab>/<rest>`, named by
the sha256 of its bytes, and re-hashed before it is handed out. A version's manifest digest is
the sha256 of its sorted `path<TAB>sha256<TAB>size` lines, so equal trees get equal digests."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path, PurePosixPath

from trainforge.core.errors import DataLoss, FieldViolation, InvalidArgument
from trainforge.core.registry.models import ArtifactFile, Manifest

CHUNK = 1 << 20  # 1 MiB reads: large enough that hashing runs at memory speed, small enough to stream
MAX_FILES = 10_000


def manifest_digest(files: list[ArtifactFile] | tuple[ArtifactFile, ...]) -> str:
    lines = "".join(f"{f.path}\t{f.sha256}\t{f.size_bytes}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(lines.encode()).hexdigest()


def check_relative_path(path: str, field: str = "path") -> str:
    """A manifest path: relative, `/`-separated, no `.`/`..` parts, printable."""
    parts = PurePosixPath(path).parts
    if (not path or path.startswith("/") or "\\" in path or "\x00" in path or len(path) > 1024
            or any(p in (".", "..") for p in parts) or path != "/".join(parts)):
        raise InvalidArgument([FieldViolation(field, f"{path!r} must be a relative path without '.' or '..' parts")])
    return path


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def blob_path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    # -- writing -----------------------------------------------------------------------------
    # Writing is two steps: a file is hashed into tmp/ (`stage_*`), then moved under its digest
    # (`publish`). The registry store publishes inside the transaction that references the blobs,
    # holding a shared lock per digest, so the collector (exclusive lock, references re-read under
    # it) can never unlink a blob between its publication and the commit that references it.
    def put_file(self, source: Path) -> tuple[str, int]:
        """Copy one file in, hashing as it streams; returns (sha256, size)."""
        writer = self.stage_file(source)
        writer.publish()
        return writer.sha256, writer.size

    def stage_file(self, source: Path) -> BlobWriter:
        """One file hashed into tmp/, not yet published."""
        writer = self.writer()
        try:
            with open(source, "rb") as reader:
                while chunk := reader.read(CHUNK):
                    writer.write(chunk)
            writer.finish()
        except BaseException:
            writer.discard()
            raise
        return writer

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def collect_tree(self, folder: Path) -> list[tuple[str, Path]]:
        """(relative path, real path) of every regular file under `folder`, refusing links that
        leave it and special files. `folder` is already confined to the models root."""
        found: list[tuple[str, Path]] = []
        folder = folder.resolve()
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            for name in list(dirnames):
                link = Path(dirpath) / name
                if link.is_symlink():
                    raise InvalidArgument.one("source", f"{link.relative_to(folder)} is a symlinked directory")
            for name in sorted(filenames):
                path = Path(dirpath) / name
                real = Path(os.path.realpath(path))
                rel = path.relative_to(folder).as_posix()
                if not real.is_relative_to(folder):
                    raise InvalidArgument.one("source", f"{rel!r} links outside the source folder")
                if not stat.S_ISREG(real.stat().st_mode):
                    raise InvalidArgument.one("source", f"{rel!r} is not a regular file")
                found.append((rel, real))
                if len(found) > MAX_FILES:
                    raise InvalidArgument.one("source", f"more than {MAX_FILES} files")
        if not found:
            raise InvalidArgument.one("source", "the folder holds no files")
        return sorted(found)

    def stage_tree(self, folder: Path) -> StagedFiles:
        """Every regular file under `folder` hashed into tmp/ (see collect_tree), not yet published."""
        staged = StagedFiles()
        try:
            for rel, real in self.collect_tree(folder):
                writer = self.stage_file(real)
                staged.add(ArtifactFile(path=rel, size_bytes=writer.size, sha256=writer.sha256), writer)
        except BaseException:
            staged.discard()
            raise
        return staged

    def put_tree(self, folder: Path) -> list[ArtifactFile]:
        staged = self.stage_tree(folder)
        staged.publish()
        return staged.files

    # -- reading -----------------------------------------------------------------------------
    def matches(self, sha256: str) -> bool | None:
        """True if the blob hashes to its name, False if it does not, None if it is missing."""
        path = self.blob_path(sha256)
        if not path.exists():
            return None
        return _file_sha256(path) == sha256

    async def read_verified(self, artifact: ArtifactFile, chunk_size: int = CHUNK) -> AsyncIterator[tuple[int, bytes]]:
        """Yields (offset, bytes) of a blob whose content was checked against its digest first:
        a corrupted file is refused whole rather than discovered after half of it was sent."""
        state = self.matches(artifact.sha256)
        if state is None:
            raise DataLoss(f"artifact {artifact.path!r} is missing from the store",
                           metadata={"path": artifact.path, "sha256": artifact.sha256})
        if state is False:
            raise DataLoss(f"artifact {artifact.path!r} does not match its sha256",
                           metadata={"path": artifact.path, "sha256": artifact.sha256})
        offset = 0
        with open(self.blob_path(artifact.sha256), "rb") as reader:
            while chunk := reader.read(chunk_size):
                yield offset, chunk
                offset += len(chunk)

    def materialize(self, manifest: Manifest, cache_root: Path) -> Path:
        """The manifest's files as a folder `cache_root/<manifest digest>`, every file checked
        against its sha256 on each call.

        Callers in any thread or process of this machine agree through a lock file per digest
        (`.locks/<digest>.lock`, fcntl): checks share it, a build holds it alone, so the callers
        that race the first materialisation wait for one build and all get its folder. A folder
        that no longer matches (edited in place) is never deleted, since a running job or
        evaluation may be reading it: it is renamed to `.retired/<digest>-...` and a fresh copy
        from the verified store takes its name. Retired folders are left to the operator."""
        target = cache_root / manifest.manifest_digest
        locks = cache_root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        lock = locks / f"{manifest.manifest_digest}.lock"
        with _flock(lock, fcntl.LOCK_SH):
            if _intact(target, manifest):
                return target
        with _flock(lock, fcntl.LOCK_EX):
            if _intact(target, manifest):  # built by the caller this one waited for
                return target
            fresh = self._build(manifest, cache_root)
            try:
                if target.exists() or target.is_symlink():
                    retired = cache_root / ".retired" / f"{target.name}-{time.time_ns()}-{os.getpid()}"
                    retired.parent.mkdir(exist_ok=True)
                    os.rename(target, retired)
                os.rename(fresh, target)
            except OSError:
                shutil.rmtree(fresh, ignore_errors=True)
                # A builder that does not take the lock (another machine sharing the folder)
                # put its copy there first: its folder is as good as this one.
                if _intact(target, manifest):
                    return target
                raise
            except BaseException:
                shutil.rmtree(fresh, ignore_errors=True)
                raise
        return target

    def _build(self, manifest: Manifest, cache_root: Path) -> Path:
        """A new folder beside the target holding verified copies of the manifest's files."""
        staging = Path(tempfile.mkdtemp(dir=cache_root, prefix=".staging-"))
        try:
            for f in manifest.files:
                state = self.matches(f.sha256)
                if state is not True:
                    raise DataLoss(f"artifact {f.path!r} is {'missing from' if state is None else 'corrupt in'} "
                                   "the store", metadata={"path": f.path, "sha256": f.sha256})
                destination = staging / f.path
                destination.parent.mkdir(parents=True, exist_ok=True)
                # A copy, not a hard link: editing the loaded folder must never alter the store.
                shutil.copyfile(self.blob_path(f.sha256), destination)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.root / "sha256").rglob("*") if p.is_file())


class StagedFiles:
    """A version's files hashed into the store's tmp/ folder, waiting to be published together."""

    def __init__(self) -> None:
        self.files: list[ArtifactFile] = []
        self._writers: list[BlobWriter] = []

    def add(self, artifact: ArtifactFile, writer: BlobWriter) -> None:
        self.files.append(artifact)
        self._writers.append(writer)

    @property
    def shas(self) -> set[str]:
        return {f.sha256 for f in self.files}

    def publish(self) -> None:
        for writer in self._writers:
            writer.publish()

    def discard(self) -> None:
        """Removes what was not published; published blobs are the collector's business."""
        for writer in self._writers:
            writer.discard()


class BlobWriter:
    """Streams bytes into a temporary file while hashing (`finish`), then moves it under its
    digest (`publish`). The rename is atomic, so a reader never sees half a blob, and publishing an
    existing blob replaces it with identical bytes."""

    def __init__(self, store: ArtifactStore):
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.root / "tmp")
        self._file = os.fdopen(fd, "wb")
        self._tmp = Path(name)
        self._digest = hashlib.sha256()
        self.size = 0
        self.sha256 = ""
        self.published = False

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)
        self.size += len(data)

    def finish(self) -> tuple[str, int]:
        """Flushes the bytes to disk and names their digest; returns (sha256, size)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self.sha256 = self._digest.hexdigest()
        return self.sha256, self.size

    def publish(self) -> None:
        self.finish()
        if self.published:
            return
        target = self._store.blob_path(self.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, target)
        self.published = True

    def commit(self) -> tuple[str, int]:
        """finish, then publish at once (for blobs no transaction has to reference)."""
        self.publish()
        return self.sha256, self.size

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        if not self.published:
            self._tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    """An fcntl lock on `path` (created if missing, never removed: removing a lock file lets two
    holders lock different files under one name)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _intact(folder: Path, manifest: Manifest) -> bool:
    return folder.is_dir() and all(_file_sha256(folder / f.path) == f.sha256 for f in manifest.files)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as reader:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()
