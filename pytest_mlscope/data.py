"""Datasets and the declarative preprocessing a manifest names.

Preprocessing runs in numpy (and Pillow for resizing) before any framework sees the data, so every
framework of a manifest gets bit-identical inputs and agreement checks compare models, not
pipelines. Only data that a package ships is used: scikit-learn's digits and sample images, or an
npz file the user provides.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pytest_mlscope.errors import MlscopeError

if TYPE_CHECKING:
    from pytest_mlscope.manifest import DatasetSpec, InputSpec, Manifest

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    name: str
    samples: list[np.ndarray]  # raw, before preprocessing
    labels: np.ndarray | None


@dataclass(frozen=True)
class PreparedData:
    """Preprocessed inputs, one row per sample, ready to batch."""

    inputs: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.inputs)

    def batches(self, batch_size: int) -> list[np.ndarray]:
        """Consecutive batches covering every sample; the last is filled by wrapping around.

        Wrapping keeps every batch at the requested size (a model compiled for a fixed batch still
        runs), and callers drop the extra rows by counting samples.
        """
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
    else:  # pragma: no cover - the schema admits no other name
        raise MlscopeError(f"unknown dataset {spec.name!r}")
    if spec.limit is not None:
        samples = samples[: spec.limit]
        labels = labels[: spec.limit] if labels is not None else None
    return Dataset(spec.name, samples, labels)


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


def prepare(manifest: Manifest) -> PreparedData:
    """The manifest's dataset, preprocessed, stacked into one array."""
    if len(manifest.inputs) != 1:
        raise MlscopeError(
            f"{manifest.where('inputs')}: inputs: models with several inputs are not supported yet"
        )
    dataset = load_dataset(manifest.dataset, manifest.directory)
    if not dataset.samples:
        raise MlscopeError(f"{manifest.where('dataset')}: dataset: no samples")
    spec = manifest.inputs[0]
    stacked = np.stack([preprocess(sample, spec) for sample in dataset.samples])
    return PreparedData(stacked, dataset.labels)
