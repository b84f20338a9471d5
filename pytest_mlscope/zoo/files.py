"""Model files: their formats (by suffix, or by what a folder holds), the other file of a
two-file model, and checksums of files, folders and the files of one model as a canonical tar.

A model saved as a folder (a TensorFlow SavedModel), or as two files (an MXNet symbol and its
params, a Caffe prototxt and its caffemodel, staged into one folder), is one artifact: its sha256
is that of the folder written as a canonical tar (``write_tree``: entries sorted, no times,
owners or modes of its own), the same bytes the results database keeps, so a folder is verified,
stored and fetched as a file is.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from typing import IO

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.protocol import ArtifactRef

SUFFIX_FORMATS = {
    ".onnx": "onnx",
    ".pt2": "torch_export",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".keras": "keras",
    ".plan": "tensorrt_plan",
    ".engine": "tensorrt_plan",
    ".gguf": "gguf",
    # One file of a model made of two; the other is found beside it (``companions``).
    "-symbol.json": "mxnet_symbol",
    ".params": "mxnet_symbol",
    ".prototxt": "caffe_net",
    ".caffemodel": "caffe_net",
}


def _one(folder: Path, pattern: str) -> bool:
    return len([p for p in folder.glob(pattern) if p.is_file()]) == 1


# Formats that are folders, each known by what it holds: a SavedModel by its saved_model.pb, and
# the two-file formats by one file of each kind (a user's files are staged into such a folder).
TREE_FORMATS = {
    "saved_model": lambda folder: (folder / "saved_model.pb").is_file(),
    "mxnet_symbol": lambda folder: _one(folder, "*-symbol.json") and _one(folder, "*.params"),
    "caffe_net": lambda folder: _one(folder, "*.prototxt") and _one(folder, "*.caffemodel"),
}


def _suffix_format(path: Path) -> str | None:
    return next((f for s, f in SUFFIX_FORMATS.items() if path.name.endswith(s)), None)


def file_format(path: Path) -> str | None:
    """A model file's format from its suffix; a ``.pt`` is TorchScript only if it is one (a
    ``torch.save``'d state dict shares the suffix and cannot be loaded without its class)."""
    if path.is_dir():
        return next((f for f, holds in TREE_FORMATS.items() if holds(path)), None)
    fmt = _suffix_format(path)
    if fmt == "torchscript" and path.is_file() and not _is_torchscript(path):
        raise ArtifactError(
            f"{path}: not a TorchScript archive (a torch.save'd state dict or module?): save the "
            "model with torch.jit.save, or with torch.export.save as a .pt2 file, or name the "
            "class its weights belong to: {path: weights.pt, format: torch_state_dict, "
            "module: 'package.module:Class'}"
        )
    return fmt


def companions(path: Path, fmt: str) -> list[Path]:
    """The other file of a two-file model named by one of its files, found the way its
    framework writes them: ``net-symbol.json`` beside ``net-0000.params`` (MXNet's
    ``HybridBlock.export``), ``net.prototxt`` (or a lone ``deploy.prototxt``) beside
    ``net.caffemodel``. Anything else is an error that says how to name both."""
    folder = path.parent
    if fmt == "mxnet_symbol":
        if path.name.endswith("-symbol.json"):
            prefix = path.name.removesuffix("-symbol.json")
            found = sorted(folder.glob(f"{glob.escape(prefix)}-*.params"))
            wanted = f"{prefix}-NNNN.params"
        else:
            prefix = path.stem.rsplit("-", 1)[0]
            found = [folder / f"{prefix}-symbol.json"]
            wanted = found[0].name
    elif fmt == "caffe_net":
        other = ".prototxt" if path.suffix == ".caffemodel" else ".caffemodel"
        found = [path.with_suffix(other)]
        if other == ".prototxt" and not found[0].is_file():
            found = list(folder.glob("*deploy*.prototxt"))
        wanted = path.with_suffix(other).name
    else:
        return []
    found = [p for p in found if p.is_file()]
    if len(found) != 1:
        seen = f"found {', '.join(p.name for p in found)}" if found else "found none"
        raise ArtifactError(
            f"{path}: a {fmt} model is two files, and the other one ({wanted}) is not beside it "
            f"unambiguously ({seen}): name both, as a list: [{path.name}, <the other file>]"
        )
    return found


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


def sha256_path(path: str | os.PathLike[str] | list[Path]) -> str:
    """A file's sha256, or a folder's, or a list of files': that of their canonical tar
    (``write_tree``)."""
    if isinstance(path, list) or Path(path).is_dir():
        digest = hashlib.sha256()

        class Sink:
            def write(self, data: bytes) -> int:
                digest.update(data)
                return len(data)

        write_tree(path if isinstance(path, list) else Path(path), Sink())  # type: ignore[arg-type]
        return digest.hexdigest()
    return sha256_file(path)


def write_tree(folder: Path | list[Path], handle: IO[bytes]) -> None:
    """``folder`` as a canonical tar: entries in sorted order, each with the same time (0),
    owner (0) and mode (0644 files, 0755 folders), USTAR headers; so equal folders are equal
    bytes on any machine, and their sha256 names them. A symbolic link is refused: what it
    points at would not travel with the model. A list of files is written as the folder that
    holds them under their names would be (the files of one model, staged into one)."""
    import tarfile

    if isinstance(folder, list):
        entries = sorted((p.name, p) for p in folder)
    else:
        root = folder
        entries = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*"))
    with tarfile.open(fileobj=handle, mode="w|", format=tarfile.USTAR_FORMAT) as archive:
        for name, path in entries:
            if path.is_symlink() and isinstance(folder, Path):
                raise ArtifactError(
                    f"{path}: a symbolic link in a model folder; copy the file it points to"
                )
            info = tarfile.TarInfo(name)
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
