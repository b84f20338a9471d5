"""Datasets, batching and the declarative preprocessing, on the data the packages ship."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_mlscope.data import (
    PreparedData,
    digits_split,
    load_dataset,
    prepare,
    preprocess,
)
from pytest_mlscope.errors import MlscopeError
from pytest_mlscope.manifest import Manifest

# ImageNet normalization (alexnet.yaml): a pixel in [0, 1] maps to [-mean/std, (1-mean)/std].
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


# -- the digits split ----------------------------------------------------------------------------


def test_digits_split_holds_out_a_quarter_of_the_1797_digits() -> None:
    x_train, y_train, x_test, y_test = digits_split()

    assert len(x_test) == len(y_test) == 450
    assert len(x_train) == len(y_train) == 1797 - 450
    assert x_test.shape[1:] == (8, 8)
    assert x_test.dtype == np.float32
    assert y_test.dtype == np.int64


def test_digits_split_is_stratified_by_class() -> None:
    _, y_train, _, y_test = digits_split()
    total = np.bincount(np.concatenate([y_train, y_test]))

    test_counts = np.bincount(y_test, minlength=10)

    assert np.all(np.abs(test_counts - 0.25 * total) <= 1)


def test_digits_split_is_the_same_on_every_call() -> None:
    first = [array.copy() for array in digits_split()]
    digits_split.cache_clear()  # recompute from scratch, not from the cache

    second = digits_split()

    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


# -- batching ------------------------------------------------------------------------------------


def test_batches_wrap_around_to_fill_the_last_batch() -> None:
    data = PreparedData(np.arange(10).reshape(10, 1), None)

    batches = data.batches(4)

    assert [b.shape for b in batches] == [(4, 1), (4, 1), (4, 1)]
    assert batches[-1].ravel().tolist() == [8, 9, 0, 1]


def test_batches_cover_every_sample_in_order() -> None:
    data = PreparedData(np.arange(10).reshape(10, 1), None)

    rows = np.concatenate(data.batches(3)).ravel()

    assert rows[:10].tolist() == list(range(10))


def test_a_batch_larger_than_the_data_repeats_the_samples() -> None:
    data = PreparedData(np.arange(3).reshape(3, 1), None)

    (batch,) = data.batches(8)

    assert batch.ravel().tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_batches_are_contiguous_arrays() -> None:
    data = PreparedData(np.arange(40, dtype=np.float32).reshape(10, 2, 2)[:, ::-1], None)

    assert all(batch.flags.c_contiguous for batch in data.batches(4))


# -- preprocessing -------------------------------------------------------------------------------


def test_alexnet_preprocessing_gives_normalized_float32_chw_images(
    alexnet_manifest: Manifest,
) -> None:
    dataset = load_dataset(alexnet_manifest.dataset, alexnet_manifest.directory)
    spec = alexnet_manifest.inputs[0]
    lowest = -IMAGENET_MEAN / IMAGENET_STD
    highest = (1 - IMAGENET_MEAN) / IMAGENET_STD

    assert len(dataset.samples) == 2
    for sample in dataset.samples:
        image = preprocess(sample, spec)

        assert image.shape == (3, 224, 224)
        assert image.dtype == np.float32
        per_channel = image.reshape(3, -1)
        assert np.all(per_channel.min(axis=1) >= lowest - 1e-5)
        assert np.all(per_channel.max(axis=1) <= highest + 1e-5)
        # A natural photo normalized with ImageNet statistics has channel means near zero.
        assert np.all(np.abs(per_channel.mean(axis=1)) < 1.5)


def test_digits_preparation_gives_450_single_channel_images_in_unit_range(
    digits_manifest: Manifest,
) -> None:
    prepared = prepare(digits_manifest)

    assert prepared.inputs.shape == (450, 1, 8, 8)
    assert prepared.inputs.dtype == np.float32
    assert prepared.inputs.min() >= 0.0
    assert prepared.inputs.max() <= 1.0
    assert prepared.labels is not None
    assert len(prepared) == len(prepared.labels) == 450


def test_digits_preparation_is_the_test_split_scaled_by_16(digits_manifest: Manifest) -> None:
    _, _, x_test, y_test = digits_split()

    prepared = prepare(digits_manifest)

    np.testing.assert_array_equal(prepared.inputs[:, 0], x_test / np.float32(16))
    np.testing.assert_array_equal(prepared.labels, y_test)


def test_a_wrong_declared_shape_names_the_input_and_both_shapes(
    digits_manifest: Manifest,
) -> None:
    spec = digits_manifest.inputs[0].model_copy(update={"shape": [1, 8, 9]})
    _, _, x_test, _ = digits_split()

    with pytest.raises(MlscopeError) as excinfo:
        preprocess(x_test[0], spec)

    message = str(excinfo.value)
    assert "'input'" in message
    assert "[1, 8, 8]" in message
    assert "[1, 8, 9]" in message
