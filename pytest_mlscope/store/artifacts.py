"""Model files kept with the database: content-addressed, zlib-compressed in chunks so no file is
ever whole in memory, stored and fetched with their checksum verified, freed when unreferenced.

A model too large for a database table goes to an artifact directory instead
(``--mlscope-artifact-store=DIR``, a shared mount for machines that share the database): the
file is written there under its checksum, and the database keeps its row, with the directory as
its location, so baselines reference it, fetch it and free it as they do chunks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.store.base import StoreError, _StoreBase
from pytest_mlscope.store.records import StoredArtifact
from pytest_mlscope.store.schema import (
    artifact_blobs_table,
    artifact_chunks_table,
    baseline_artifacts_table,
)
from pytest_mlscope.store.values import _now, _stamp

SHA256 = re.compile(r"[0-9a-f]{64}")

# Raw bytes per stored chunk of an artifact: what one statement carries, and all of a file that is
# ever in memory while it is stored or fetched.
ARTIFACT_CHUNK_SIZE = 4 * 1024 * 1024
# Weights barely compress at any level (random-like floats by 7 %), and level 1 is the quickest;
# files with long runs of zeros still shrink a lot.
ARTIFACT_COMPRESSION_LEVEL = 1


class ArtifactsMixin(_StoreBase):
    """Storing, fetching and freeing model files."""

    # Where new artifacts are written instead of the database's chunks (the session's
    # --mlscope-artifact-store); also looked in first when a blob's recorded directory is
    # mounted elsewhere on this machine.
    artifact_dir: Path | None = None

    def put_artifact(
        self,
        path: str | os.PathLike[str],
        *,
        sha256: str,
        format: str,
        filename: str | None = None,
    ) -> bool:
        """Store a model file under its checksum; False (nothing written) when it is stored
        already, by this session or another one at the same moment.

        The file is read once, a chunk at a time, and hashed as it is read: one that no longer
        has ``sha256`` is refused with :class:`ArtifactError` and nothing is kept. The blob and
        all its chunks are one transaction, so a killed session leaves no half of one.
        ``filename`` (default: the file's name) is what a fetched copy is called. A folder (a
        SavedModel) is stored as its canonical tar, whose sha256 is the folder's.
        """
        _check_sha256(sha256)
        source = Path(path)
        name = _safe_filename(filename or source.name)
        if self.has_artifact(sha256):
            return False
        try:
            if source.is_dir():
                from pytest_mlscope.zoo.files import write_tree

                handle = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, as the file is
                write_tree(source, handle)
                handle.seek(0)
            else:
                handle = open(source, "rb")  # noqa: SIM115 - closed below, with the transaction
        except OSError as exc:
            raise ArtifactError(
                f"cannot store artifact {source} (sha256 {sha256}): {exc.strerror or exc}"
            ) from None
        # A directory: the file goes there, renamed into place inside the transaction that
        # inserts its row, so the row commits only once the file is whole.
        directory = self.artifact_dir.resolve() if self.artifact_dir is not None else None
        blobs = artifact_blobs_table.c
        try:
            with handle, self._engine.begin() as connection:
                # The blob's row first: a second session storing the same file (or one freeing
                # it) waits here, on the primary key, and then finds it taken, instead of
                # writing it twice.
                connection.execute(
                    sa.insert(artifact_blobs_table).values(
                        sha256=sha256,
                        size=0,
                        stored_size=0,
                        chunks=0,
                        format=format,
                        filename=name,
                        created_at=_now(),
                        location=str(directory) if directory is not None else None,
                    )
                )
                if directory is None:
                    size, stored_size, count = _insert_chunks(connection, handle, sha256, source)
                else:
                    target = _directory_path(directory, sha256)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    size = stored_size = _copy_checked(handle, target, sha256, source)
                    count = 0
                connection.execute(
                    sa.update(artifact_blobs_table)
                    .where(blobs.sha256 == sha256)
                    .values(size=size, stored_size=stored_size, chunks=count)
                )
        except sa_exc.IntegrityError:
            if self.has_artifact(sha256):  # another session stored it first
                return False
            raise StoreError(f"cannot store artifact {sha256} in {self.url}") from None
        except OSError as exc:
            where = f" in {directory}" if directory is not None else ""
            raise ArtifactError(
                f"cannot store artifact {source} (sha256 {sha256}){where}: {exc.strerror or exc}"
            ) from None
        except sa_exc.OperationalError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise StoreError(f"cannot store artifact {sha256} in {self.url}: {reason}") from None
        return True

    def has_artifact(self, sha256: str) -> bool:
        """Whether the file with this checksum is stored (whole: a blob is written at once)."""
        return self.artifact(sha256) is not None

    def artifact(self, sha256: str) -> StoredArtifact | None:
        """The stored file with this checksum, or None."""
        query = sa.select(artifact_blobs_table).where(artifact_blobs_table.c.sha256 == sha256)
        with self._engine.connect() as connection:
            row = connection.execute(query).mappings().one_or_none()
        if row is None:
            return None
        # The table's columns are the record's fields.
        return StoredArtifact(**{**row, "created_at": _stamp(row["created_at"])})

    def fetch_artifact(self, sha256: str, directory: str | os.PathLike[str]) -> Path:
        """The stored file, written to ``directory/<sha256>/<its filename>``; its path.

        A copy already there with the right checksum is used as it is. Chunks are written to a
        temporary file, one at a time, and renamed into place only once the whole file has the
        checksum, so a reader never sees a partial or corrupt model. Refused when the database
        does not hold the file, or holds it damaged.
        """
        from pytest_mlscope.zoo.files import TREE_FORMATS, read_tree, sha256_path

        _check_sha256(sha256)
        stored = self.artifact(sha256)
        if stored is None:
            raise StoreError(f"artifact {sha256} is not stored in {self.url}")
        target = Path(directory) / sha256 / _safe_filename(stored.filename)
        if target.exists() and sha256_path(target) == sha256:
            return target
        if stored.format in TREE_FORMATS:  # a folder: its tar, checked, then unpacked
            Path(directory).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=directory) as scratch:
                packed = self._fetch_bytes(stored, Path(scratch))
                unpacked = Path(scratch) / "tree"
                read_tree(packed, unpacked)
                if sha256_path(unpacked) != sha256:
                    raise StoreError(f"artifact {sha256} in {self.url} unpacks to another folder")
                shutil.rmtree(target, ignore_errors=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(unpacked, target)
            return target
        return self._fetch_bytes(stored, target.parent)

    def _fetch_bytes(self, stored: StoredArtifact, directory: Path) -> Path:
        """The stored bytes, written to ``directory/<filename>`` through a temporary file that is
        renamed into place only once every chunk read back with the checksum."""
        target = directory / _safe_filename(stored.filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
        partial = Path(temporary)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                if stored.location is not None:
                    problem = self._write_located(stored, handle)
                else:
                    problem = self._write_chunks(stored, handle)
            if problem is not None:
                if not self.has_artifact(stored.sha256):
                    problem = "it was freed while being fetched"
                state = (
                    "is missing"
                    if problem.startswith("its file is not")
                    else "is unreadable"
                    if "cannot be read" in problem
                    else "is corrupt"
                )
                raise StoreError(f"artifact {stored.sha256} in {self.url} {state}: {problem}")
            partial.chmod(0o644)  # mkstemp makes it private; workers in containers read it
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def _located(self, stored: StoredArtifact) -> Path | None:
        """The file of a blob kept in an artifact directory: in this session's directory, else
        where it was written (one share may be mounted at two paths)."""
        assert stored.location is not None
        for directory in (self.artifact_dir, Path(stored.location)):
            if directory is not None and _directory_path(directory, stored.sha256).is_file():
                return _directory_path(directory, stored.sha256)
        return None

    def _unlink_located(self, sha256: str, location: str) -> None:
        """Remove a freed blob's file, wherever this machine sees its directory; a file that
        cannot be removed (a read-only share) is left, as an orphan nothing references."""
        for directory in {self.artifact_dir, Path(location)} - {None}:
            with contextlib.suppress(OSError):
                _directory_path(directory, sha256).unlink(missing_ok=True)  # type: ignore[arg-type]

    def _write_located(self, stored: StoredArtifact, handle: Any) -> str | None:
        """Copy a blob's file from its artifact directory to ``handle``; what is wrong, or None."""
        path = self._located(stored)
        if path is None:
            where = f"{stored.location}" + (
                f" nor in {self.artifact_dir}" if self.artifact_dir is not None else ""
            )
            return (
                f"its file is not in the artifact directory {where} (is the directory mounted "
                "here? pass it as --mlscope-artifact-store=DIR)"
            )
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as source:
                while chunk := source.read(ARTIFACT_CHUNK_SIZE):
                    digest.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
        except OSError as exc:
            return f"{path} cannot be read: {exc.strerror or exc}"
        return _mismatch(stored, size, digest.hexdigest(), f"{path}")

    def _write_chunks(self, stored: StoredArtifact, handle: Any) -> str | None:
        """Write a blob's chunks, decompressed, to ``handle``; what is wrong with them, or None."""
        chunks = artifact_chunks_table.c
        query = (
            sa.select(chunks.seq, chunks.data)
            .where(chunks.sha256 == stored.sha256)
            .order_by(chunks.seq)
            # One chunk at a time from the server, not the whole file in the driver's buffer.
            .execution_options(yield_per=1)
        )
        digest = hashlib.sha256()
        size = count = 0
        with self._engine.connect() as connection:
            for seq, data in connection.execute(query):
                if seq != count:
                    return f"chunk {count} of {stored.chunks} is missing"
                try:
                    raw = zlib.decompress(data)
                except zlib.error as exc:
                    return f"chunk {seq} of {stored.chunks} does not decompress ({exc})"
                digest.update(raw)
                handle.write(raw)
                size += len(raw)
                count += 1
        if count != stored.chunks:
            return f"{count} of its {stored.chunks} chunks are stored"
        return _mismatch(stored, size, digest.hexdigest(), "the stored chunks")

    def free_artifacts(self) -> int:
        """Free every stored artifact no baseline keeps (left by an interrupted session, say);
        the bytes freed, as they were stored."""
        blobs, references = artifact_blobs_table.c, baseline_artifacts_table.c
        unreferenced = sa.select(blobs.sha256).where(
            ~sa.exists().where(references.sha256 == blobs.sha256)
        )
        with self._engine.connect() as connection:
            candidates = set(connection.execute(unreferenced).scalars())
        return self._free_artifacts(candidates)

    def _free_artifacts(self, candidates: Iterable[str]) -> int:
        """Delete those of ``candidates`` that no baseline references; the bytes freed.

        One transaction per blob, each deleting only while nothing references it: a blob that
        another session references meanwhile stays (its reference then holds the row, and the
        delete fails on the foreign key, undoing the chunks' delete with it).
        """
        blobs, chunks = artifact_blobs_table.c, artifact_chunks_table.c
        freed = 0
        for sha256 in sorted(set(candidates)):
            unreferenced = ~sa.exists().where(baseline_artifacts_table.c.sha256 == sha256)
            try:
                with self._engine.begin() as connection:
                    # A write first, so SQLite takes its lock before reading what to delete.
                    connection.execute(
                        sa.delete(artifact_chunks_table).where(
                            chunks.sha256 == sha256, unreferenced
                        )
                    )
                    row = connection.execute(
                        sa.select(blobs.stored_size, blobs.location).where(
                            blobs.sha256 == sha256, unreferenced
                        )
                    ).one_or_none()
                    if row is None:
                        continue  # gone already, or referenced: nothing was deleted
                    connection.execute(
                        sa.delete(artifact_blobs_table).where(blobs.sha256 == sha256)
                    )
                    if row.location is not None:
                        # Before the delete commits: a session storing the same file again
                        # waits on the row, then writes a file of its own.
                        self._unlink_located(sha256, row.location)
                freed += int(row.stored_size)
            except sa_exc.IntegrityError:
                continue  # referenced meanwhile: kept, chunks and all
        return freed


def _insert_chunks(
    connection: sa.Connection, handle: Any, sha256: str, source: Path
) -> tuple[int, int, int]:
    """The file's chunks, compressed, hashed as they are read; (size, stored size, chunks).
    A file that no longer has ``sha256`` is refused, and the transaction with it."""
    digest = hashlib.sha256()
    size = stored_size = count = 0
    while chunk := handle.read(ARTIFACT_CHUNK_SIZE):
        digest.update(chunk)
        data = zlib.compress(chunk, ARTIFACT_COMPRESSION_LEVEL)
        connection.execute(
            sa.insert(artifact_chunks_table).values(sha256=sha256, seq=count, data=data)
        )
        size += len(chunk)
        stored_size += len(data)
        count += 1
    if digest.hexdigest() != sha256:
        raise ArtifactError(
            f"artifact {source} has sha256 {digest.hexdigest()}, expected {sha256}; "
            f"the file changed after its checksum was recorded, so it is not stored"
        )
    return size, stored_size, count


def _directory_path(directory: Path, sha256: str) -> Path:
    """Where an artifact directory keeps a file: fanned out by the checksum's first two digits,
    so no folder holds more than a few hundred entries."""
    return directory / sha256[:2] / sha256


def _copy_checked(handle: Any, target: Path, sha256: str, source: Path) -> int:
    """Copy ``handle`` to ``target`` through a temporary file beside it, renamed into place only
    when the bytes have ``sha256``; the size. A file that changed is refused, as in the database."""
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent
    )
    partial = Path(temporary)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(descriptor, "wb") as out:
            while chunk := handle.read(ARTIFACT_CHUNK_SIZE):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if digest.hexdigest() != sha256:
            raise ArtifactError(
                f"artifact {source} has sha256 {digest.hexdigest()}, expected {sha256}; the file "
                "changed after its checksum was recorded, so it is not stored"
            )
        partial.chmod(0o644)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return size


def _check_sha256(sha256: str) -> None:
    if not SHA256.fullmatch(sha256):
        raise StoreError(
            f"expected an artifact's sha256 as 64 lowercase hex digits, got {sha256!r}"
        )


def _safe_filename(name: str) -> str:
    """The name a fetched artifact is written under: the last part of the stored one only, so a
    name stored by someone else (``../../.bashrc``) cannot place it outside the fetch directory."""
    base = Path(name.replace("\\", "/").replace("\x00", "")).name
    return base[:255] if base not in ("", ".", "..") else "artifact"


def _mismatch(stored: StoredArtifact, size: int, sha256: str, what: str) -> str | None:
    """What a blob read back wrong (its size, then its content), or None when it is whole."""
    if size != stored.size:
        return f"{what}: {size} bytes, expected {stored.size}"
    if sha256 != stored.sha256:
        return f"{what} reads back with sha256 {sha256}"
    return None
