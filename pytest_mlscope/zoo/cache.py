"""The artifact cache: models are built once, their sha256 recorded, and verified before each load.

Layout: ``<root>/<model>/<key>/`` holds the files a builder wrote and ``artifacts.json`` with their
checksums, where ``key`` hashes the builder, its seed and params and the manifest version, so a
changed recipe builds anew instead of reusing stale weights. Builds go to a temporary directory and
are renamed into place, under a file lock, so parallel sessions never see half-written files.
``<root>/from-store/<sha256>/`` holds files fetched from the results database, where baselines keep
the models they were measured with.

A model saved as a folder (a TensorFlow SavedModel) is one artifact: its sha256 is that of the
folder written as a canonical tar (``write_tree``: entries sorted, no times, owners or modes of
its own), the same bytes the results database keeps, so a folder is verified, stored and fetched
as a file is.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.protocol import ArtifactRef

if TYPE_CHECKING:
    from pytest_mlscope.manifest import Manifest
    from pytest_mlscope.store import Store

RECORD = "artifacts.json"
FROM_STORE = "from-store"
SUFFIX_FORMATS = {
    ".onnx": "onnx",
    ".pt2": "torch_export",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".keras": "keras",
}
# Formats that are folders, each known by the file that marks it.
TREE_FORMATS = {"saved_model": "saved_model.pb"}


def file_format(path: Path) -> str | None:
    """A model file's format from its suffix; a ``.pt`` is TorchScript only if it is one (a
    ``torch.save``'d state dict shares the suffix and cannot be loaded without its class)."""
    if path.is_dir():
        return next((f for f, marker in TREE_FORMATS.items() if (path / marker).is_file()), None)
    fmt = SUFFIX_FORMATS.get(path.suffix)
    if fmt == "torchscript" and path.is_file() and not _is_torchscript(path):
        raise ArtifactError(
            f"{path}: not a TorchScript archive (a torch.save'd state dict or module?): save the "
            "model with torch.jit.save, or with torch.export.save as a .pt2 file"
        )
    return fmt


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold the scripted code (``<name>/code/``); torch.save's do not."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_path(path: str | os.PathLike[str]) -> str:
    """A file's sha256, or a folder's: that of its canonical tar (``write_tree``)."""
    if Path(path).is_dir():
        digest = hashlib.sha256()

        class Sink:
            def write(self, data: bytes) -> int:
                digest.update(data)
                return len(data)

        write_tree(Path(path), Sink())  # type: ignore[arg-type]
        return digest.hexdigest()
    return sha256_file(path)


def write_tree(folder: Path, handle: IO[bytes]) -> None:
    """``folder`` as a canonical tar: entries in sorted order, each with the same time (0),
    owner (0) and mode (0644 files, 0755 folders), USTAR headers; so equal folders are equal
    bytes on any machine, and their sha256 names them. A symbolic link is refused: what it
    points at would not travel with the model."""
    import tarfile

    entries = sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix())
    with tarfile.open(fileobj=handle, mode="w|", format=tarfile.USTAR_FORMAT) as archive:
        for path in entries:
            if path.is_symlink():
                raise ArtifactError(
                    f"{path}: a symbolic link in a model folder; copy the file it points to"
                )
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
                continue
            info.size, info.mode = path.stat().st_size, 0o644
            with open(path, "rb") as content:
                archive.addfile(info, content)


def read_tree(archive_path: Path, folder: Path) -> None:
    """Unpack a tar ``write_tree`` wrote into ``folder`` (created), refusing members that would
    land outside it (tarfile's ``data`` filter)."""
    import tarfile

    folder.mkdir(parents=True)
    with tarfile.open(archive_path, mode="r:") as archive:
        archive.extractall(folder, filter="data")


def verify(artifact: ArtifactRef) -> None:
    """Refuse an artifact whose bytes are not the ones recorded, naming both hashes."""
    path = Path(artifact.path)
    if not path.exists():
        raise ArtifactError(f"artifact {path} is missing (expected by {artifact.expected_by})")
    actual = sha256_path(path)
    if actual != artifact.sha256:
        raise ArtifactError(
            f"artifact {path} has sha256 {actual}, expected {artifact.sha256} "
            f"({artifact.expected_by}); the file changed after its checksum was recorded"
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no cross-process lock
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _import_builder(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ArtifactError(f"builder {target!r} cannot be imported: {exc}") from exc
    if not callable(builder):
        raise ArtifactError(f"builder {target!r} is not callable")
    return builder


class ArtifactCache:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def artifacts(self, manifest: Manifest) -> dict[str, ArtifactRef]:
        """The manifest's artifacts by format, built first if any is missing."""
        source = manifest.model.source
        if hasattr(source, "builder"):
            return self._built(manifest)
        if hasattr(source, "url"):
            return self._downloaded(manifest)
        return self._local(manifest)

    def for_framework(
        self, manifest: Manifest, framework: str, formats: tuple[str, ...]
    ) -> ArtifactRef:
        """The artifact a framework loads: the first of its formats that the model provides.

        A checksum the manifest pins for this framework must match the file, whatever its source.
        """
        source = manifest.model.source
        path = getattr(source, "path", None)
        if isinstance(path, dict):
            if framework not in path:
                raise ArtifactError(
                    f"{manifest.where('model', 'source', 'path')}: model.source.path: "
                    f"no file for framework {framework!r}"
                )
            artifact = self._local_file(manifest, framework, path[framework])
        else:
            available = self.artifacts(manifest)
            chosen = next((available[f] for f in formats if f in available), None)
            if chosen is None:
                raise ArtifactError(
                    f"{manifest.where('model', 'source')}: model.source gives formats "
                    f"{', '.join(sorted(available)) or 'none'}; {framework} loads "
                    f"{', '.join(formats)}"
                )
            artifact = chosen
        pinned = manifest.model.sha256.get(framework)
        if pinned is not None:
            where = manifest.where("model", "sha256", framework)
            if artifact.sha256 != pinned:
                raise ArtifactError(
                    f"{where}: model.sha256.{framework}: expected {pinned}, "
                    f"the artifact {artifact.path} has {artifact.sha256}"
                )
            artifact = artifact.model_copy(update={"expected_by": f"{where}: model.sha256"})
        return artifact

    def find(self, model: str, sha256: str) -> ArtifactRef | None:
        """An artifact of ``model`` built earlier with this checksum, if the cache still holds it.

        Builds are kept per recipe, so the artifact a model edit replaced stays until the cache
        is cleaned: ``--mlscope-interleave`` times it against the new one.
        """
        for record in sorted((self.root / model).glob(f"*/{RECORD}")):
            for ref in (self._read_record(record) or {}).values():
                if ref.sha256 == sha256:
                    return ref
        return None

    def from_store(
        self, store: Store, sha256: str, format: str | None = None
    ) -> ArtifactRef | None:
        """The artifact with this checksum, fetched from the results database into
        ``<root>/from-store/``; None when the database keeps no such file (of ``format``, when
        one is asked for).

        Baselines keep there the files they measured: what a fresh CI machine, or a model file
        replaced by an edit, lacks. The file is fetched once per cache, under a lock so parallel
        workers do not each stream it, and its checksum is checked as it is written; a damaged
        copy in the database is refused with :class:`~pytest_mlscope.store.StoreError`.
        """
        from pytest_mlscope.errors import StoreError

        stored = store.artifact(sha256)
        if stored is None or (format is not None and stored.format != format):
            return None
        directory = self.root / FROM_STORE
        try:
            with _locked(directory / f".{sha256}.lock"):
                path = store.fetch_artifact(sha256, directory)
        except StoreError:
            if not store.has_artifact(sha256):  # freed by another session meanwhile
                return None
            raise
        return ArtifactRef(
            format=stored.format,
            path=str(path),
            sha256=sha256,
            expected_by=f"fetched from the results database {store.url}",
        )

    # -- sources --------------------------------------------------------------------------------

    def _key(self, manifest: Manifest) -> str:
        source = manifest.model.source
        target = getattr(source, "builder", None)
        recipe = json.dumps(
            {
                "builder": target,
                "seed": getattr(source, "seed", None),
                "params": getattr(source, "params", None),
                "version": manifest.version,
                # What the builder writes (zoo.builders.revision); None for unmarked builders.
                "revision": getattr(_import_builder(target), "revision", None) if target else None,
            },
            sort_keys=True,
        )
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    def _built(self, manifest: Manifest) -> dict[str, ArtifactRef]:
        directory = self.root / manifest.name / self._key(manifest)
        record = directory / RECORD
        refs = self._read_record(record)
        if refs is not None:
            return refs
        with _locked(self.root / f".{manifest.name}.lock"):
            refs = self._read_record(record)  # another process may have built it meanwhile
            if refs is not None:
                return refs
            self._build(manifest, directory)
            refs = self._read_record(record)
            if refs is None:  # pragma: no cover - we just wrote it
                raise ArtifactError(f"{record}: build left no readable record")
            return refs

    def _build(self, manifest: Manifest, directory: Path) -> None:
        source = manifest.model.source
        builder = _import_builder(source.builder)  # type: ignore[union-attr]
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=directory.parent))
        try:
            kwargs: dict[str, Any] = dict(source.params)  # type: ignore[union-attr]
            if "seed" in inspect.signature(builder).parameters or any(
                p.kind is p.VAR_KEYWORD for p in inspect.signature(builder).parameters.values()
            ):
                kwargs["seed"] = source.seed  # type: ignore[union-attr]
            try:
                built = builder(staging, **kwargs)
            except Exception as exc:
                raise ArtifactError(
                    f"{manifest.where('model', 'source', 'builder')}: builder "
                    f"{source.builder} failed: {type(exc).__name__}: {exc}"  # type: ignore[union-attr]
                ) from exc
            entries = {}
            for artifact in built:
                path = staging / artifact.filename
                if not path.is_file():
                    raise ArtifactError(
                        f"builder {source.builder} reported {artifact.filename}, "  # type: ignore[union-attr]
                        "which it did not write"
                    )
                entries[artifact.format] = {
                    "filename": artifact.filename,
                    "sha256": sha256_file(path),
                    "metadata": artifact.metadata,
                }
            (staging / RECORD).write_text(
                json.dumps(
                    {"builder": source.builder, "seed": source.seed, "artifacts": entries},  # type: ignore[union-attr]
                    indent=2,
                )
            )
            if directory.exists():  # a partial, record-less directory from a killed build
                shutil.rmtree(directory)
            staging.chmod(0o755)  # mkdtemp makes it private; workers in containers read it
            staging.rename(directory)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _read_record(self, record: Path) -> dict[str, ArtifactRef] | None:
        """The recorded artifacts, or None when any is missing (then they are rebuilt)."""
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        refs = {}
        for fmt, entry in data.get("artifacts", {}).items():
            path = record.parent / entry["filename"]
            if not path.is_file():
                return None
            refs[fmt] = ArtifactRef(
                format=fmt,
                path=str(path),
                sha256=entry["sha256"],
                metadata=entry.get("metadata", {}),
                expected_by=f"recorded in {record} when it was built",
            )
        return refs

    def _local_file(self, manifest: Manifest, framework: str | None, relative: str) -> ArtifactRef:
        path = manifest.resolve(relative)
        fmt = file_format(path)
        if fmt is None:
            raise ArtifactError(
                f"{manifest.where('model', 'source', 'path')}: model.source.path: cannot tell "
                f"the format of {relative!r} (known suffixes: {', '.join(SUFFIX_FORMATS)}; a "
                "SavedModel folder, with its saved_model.pb)"
            )
        if not path.exists():
            raise ArtifactError(f"{manifest.where('model', 'source', 'path')}: no file {path}")
        return ArtifactRef(
            format=fmt,
            path=str(path),
            sha256=sha256_path(path),
            expected_by=f"hashed from {path} at collection",
        )

    def _local(self, manifest: Manifest) -> dict[str, ArtifactRef]:
        path = manifest.model.source.path  # type: ignore[union-attr]
        paths = path.values() if isinstance(path, dict) else [path]
        refs = (self._local_file(manifest, None, p) for p in paths)
        return {ref.format: ref for ref in refs}

    def _downloaded(self, manifest: Manifest) -> dict[str, ArtifactRef]:
        """Fetch a url source once into the cache; the manifest must pin its checksum."""
        import urllib.request

        urls = manifest.model.source.url  # type: ignore[union-attr]
        urls = urls if isinstance(urls, dict) else {fw.name: urls for fw in manifest.framework}
        refs: dict[str, ArtifactRef] = {}
        for framework, url in urls.items():
            pinned = manifest.model.sha256.get(framework)
            if pinned is None:
                raise ArtifactError(
                    f"{manifest.where('model', 'source', 'url')}: model.source.url: a url source "
                    f"needs model.sha256.{framework}, so a changed download is refused"
                )
            name = Path(url.split("?")[0]).name or "model"
            target = self.root / "downloads" / pinned / name
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(target.suffix + ".part")
                urllib.request.urlretrieve(url, partial)
                partial.rename(target)
            fmt = file_format(target)
            if fmt is None:
                raise ArtifactError(f"cannot tell the format of {url!r}")
            refs[fmt] = ArtifactRef(
                format=fmt,
                path=str(target),
                sha256=sha256_file(target),
                expected_by=f"downloaded from {url}",
            )
        return refs
