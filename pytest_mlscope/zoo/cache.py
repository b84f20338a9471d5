"""The artifact cache: models are built once, their sha256 recorded, and verified before each load.

Layout: ``<root>/<model>/<key>/`` holds the files a builder wrote and ``artifacts.json`` with their
checksums, where ``key`` hashes the builder, its seed and params and the manifest version, so a
changed recipe builds anew instead of reusing stale weights. Builds go to a temporary directory and
are renamed into place, under a file lock, so parallel sessions never see half-written files.
``<root>/from-store/<sha256>/`` holds files fetched from the results database, where baselines keep
the models they were measured with.

A folder, or the files of one model staged into one, is one artifact (``zoo.files``).
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
from typing import TYPE_CHECKING, Any

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.protocol import ArtifactRef
from pytest_mlscope.zoo.files import (
    SUFFIX_FORMATS,
    TREE_FORMATS,
    _suffix_format,
    companions,
    file_format,
    sha256_file,
    sha256_path,
)

if TYPE_CHECKING:
    from pytest_mlscope.manifest import Manifest, ModelFiles
    from pytest_mlscope.store import Store

RECORD = "artifacts.json"
FROM_STORE = "from-store"


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
            artifact = self._local_file(manifest, framework, source.files(framework))  # type: ignore[union-attr,arg-type]
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

    def _local_file(
        self, manifest: Manifest, framework: str | None, entry: ModelFiles
    ) -> ArtifactRef:
        key = ("model", "source", "path") if framework is None else (
            "model", "source", "path", framework
        )  # fmt: skip
        where = f"{manifest.where(*key)}: {'.'.join(key)}"
        paths = [manifest.resolve(p) for p in entry.paths]
        for path in paths:
            if not path.exists():
                raise ArtifactError(f"{where}: no file {path}")
        if len(paths) == 1:
            fmt = entry.format or file_format(paths[0])
        else:
            found = {_suffix_format(p) for p in paths}
            fmt = entry.format or (found.pop() if len(found) == 1 else None)
        if fmt is None:
            raise ArtifactError(
                f"{where}: cannot tell the format of {', '.join(entry.paths)} (known suffixes: "
                f"{', '.join(SUFFIX_FORMATS)}; a SavedModel folder, with its saved_model.pb); "
                "name it: {path: ..., format: ...}"
            )
        if fmt in TREE_FORMATS and not paths[0].is_dir():
            try:
                files = paths if len(paths) > 1 else [paths[0], *companions(paths[0], fmt)]
            except ArtifactError as exc:
                raise ArtifactError(f"{where}: {exc}") from None
            path, sha256 = self._staged(files, fmt, where)
        elif len(paths) > 1:
            raise ArtifactError(
                f"{where}: a {fmt} model is one file or folder, got {len(paths)} files"
            )
        else:
            path, sha256 = paths[0], sha256_path(paths[0])
        metadata: dict[str, object] = {}
        if entry.module:
            metadata = {"module": entry.module, "kwargs": dict(entry.kwargs)}
        if entry.built_with:
            metadata["built_with"] = entry.built_with
        return ArtifactRef(
            format=fmt,
            path=str(path),
            sha256=sha256,
            metadata=metadata,
            expected_by=f"hashed from {', '.join(str(p) for p in paths)} at collection",
        )

    def _staged(self, files: list[Path], fmt: str, where: str) -> tuple[Path, str]:
        """The files of one model, linked (or copied) into one folder of the cache named by
        their checksum: a folder artifact, verified, kept by a baseline and fetched whole."""
        names = [p.name for p in files]
        if len(set(names)) != len(names):
            raise ArtifactError(f"{where}: two of the model's files share a name: {names}")
        sha256 = sha256_path(files)
        target = self.root / "files" / sha256
        if target.is_dir() and sorted(p.name for p in target.iterdir()) == sorted(names):
            if all(os.path.samefile(target / p.name, p) for p in files):
                return target, sha256
            if sha256_path(target) == sha256:
                return target, sha256
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".stage-", dir=target.parent))
        try:
            for path in files:
                try:
                    os.link(path, staging / path.name)
                except OSError:  # another file system, or links not allowed: a copy
                    shutil.copyfile(path, staging / path.name)
            staging.chmod(0o755)
            if sha256_path(staging) != sha256:
                raise ArtifactError(f"{where}: the model's files changed while they were read")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not TREE_FORMATS[fmt](target):
            raise ArtifactError(f"{where}: {names} are not the files of a {fmt} model")
        return target, sha256

    def _local(self, manifest: Manifest) -> dict[str, ArtifactRef]:
        source = manifest.model.source
        frameworks = source.path if isinstance(source.path, dict) else {None: source.path}  # type: ignore[union-attr]
        refs = (
            self._local_file(manifest, framework, source.files(framework or ""))  # type: ignore[union-attr,arg-type]
            for framework in frameworks
        )
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
