"""Where two frameworks part, on arrays whose answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_mlscope.divergence import first_divergence, load_layers, save_layers

RNG = np.random.default_rng(0)
STEM, CONV, BN, BLOCK, HEAD = (RNG.standard_normal((1, 4, 3, 3)) for _ in range(5))
# torch's hooks: a convolution and the BatchNorm after it are two layers
REFERENCE = [("stem", STEM), ("b.conv", CONV), ("b.bn", BN), ("b", BLOCK), ("head", HEAD)]


def test_a_layer_folded_into_another_matches_what_that_one_outputs() -> None:
    # The converter folded b.bn into b.conv: its node named b.conv computes b.bn's output.
    item = [("stem", STEM), ("b.conv", BN), ("b", BLOCK), ("head", HEAD)]
    found = first_divergence(REFERENCE, item, atol=1e-6, rtol=1e-4)
    assert found.layer is None and found.compared == 4


def test_the_first_layer_no_reference_layer_explains_is_named_with_the_closest() -> None:
    wrong = BN.copy()
    wrong[0, 0, 0, 0] += 1.0
    item = [("stem", STEM), ("b.conv", wrong), ("b", BLOCK + 0.5), ("head", HEAD + 0.5)]
    found = first_divergence(REFERENCE, item, atol=1e-6, rtol=1e-4)
    assert (found.layer, found.closest, found.agreeing, found.compared) == ("b.conv", "b.bn", 1, 4)
    assert found.max_abs == pytest.approx(1.0)
    assert found.describe("torch").startswith("first diverging layer: b.conv (")


def test_a_tolerance_is_relative_to_the_layers_own_scale() -> None:
    big = [("x", np.full((2, 2), 1e4))]
    assert first_divergence(big, [("x", big[0][1] + 0.5)], atol=1e-4, rtol=1e-4).layer is None
    assert first_divergence(big, [("x", big[0][1] + 5.0)], atol=1e-4, rtol=1e-4).layer == "x"


def test_nan_diverges_and_shapes_without_a_counterpart_are_not_compared() -> None:
    item = [("reduce", np.zeros(7)), ("stem", STEM * np.nan)]
    found = first_divergence(REFERENCE, item, atol=1e-3, rtol=1e-3)
    assert (found.layer, found.compared, found.agreeing) == ("stem", 1, 0)
    nothing = first_divergence(REFERENCE, [("reduce", np.zeros(7))], atol=1e-3, rtol=1e-3)
    assert nothing.compared == 0 and "no layer" in nothing.describe()


def test_layers_keep_their_order_and_a_second_call_is_numbered(tmp_path: Path) -> None:
    path = tmp_path / "layers.npz"
    save_layers(path, [("relu", STEM), ("conv", CONV), ("relu", BN)])
    loaded = load_layers(path)
    assert loaded is not None
    assert [name for name, _ in loaded] == ["relu", "conv", "relu#2"]
    assert np.array_equal(loaded[2][1], BN)
    save_layers(tmp_path / "none.npz", None)  # a framework that cannot expose its layers
    assert load_layers(tmp_path / "none.npz") is None
    assert (tmp_path / "none.npz").is_file()  # said once: the next failing item does not ask


def test_a_layer_that_copies_an_earlier_output_is_not_explained_by_it() -> None:
    # The item's b.bn passes its input through (a broken conversion): its output equals the
    # reference's b.conv, which comes before the last layer matched, so it explains nothing.
    item = [("stem", STEM), ("b.conv", CONV), ("b.bn", CONV), ("b", BLOCK)]
    found = first_divergence(REFERENCE, item, atol=1e-6, rtol=1e-4)
    assert found.layer == "b.bn"


def test_outputs_that_are_not_numbers_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "layers.npz"
    save_layers(path, [("probabilities", np.array([{"a": 0.5}], dtype=object)), ("conv", CONV)])
    loaded = load_layers(path)
    assert loaded is not None and [name for name, _ in loaded] == ["conv"]


def test_an_op_the_reference_computes_outside_its_layers_is_passed_over() -> None:
    # torch.relu called in forward: ONNX Runtime's Relu node has no torch module to match, but
    # the layers after it match again, so the error did not start there.
    relu = np.maximum(STEM, 0)
    item = [("stem", STEM), ("Relu", relu), ("b.conv", BN), ("b", BLOCK), ("head", HEAD)]
    faithful = first_divergence(REFERENCE, item, atol=1e-6, rtol=1e-4)
    assert (faithful.layer, faithful.passed_over) == (None, ("Relu",))
    broken = [*item[:3], ("b", BLOCK + 0.5), ("head", HEAD + 0.5)]
    found = first_divergence(REFERENCE, broken, atol=1e-6, rtol=1e-4)
    assert (found.layer, found.agreeing, found.passed_over) == ("b", 2, ("Relu",))
    assert "passed over Relu: no layer of torch computes it" in found.describe("torch")


def test_a_layer_the_reference_names_differently_diverges_when_nothing_matches_after_it() -> None:
    # A port whose layers have names of their own: the unmatched conv is where it parted, since
    # no layer after it matches again.
    item = [("stem0", STEM), ("conv1", BN + 0.5), ("block1", BLOCK + 0.5), ("fc", HEAD + 0.5)]
    found = first_divergence(REFERENCE, item, atol=1e-6, rtol=1e-4)
    assert (found.layer, found.agreeing, found.passed_over) == ("conv1", 1, ())


def test_a_large_layer_is_kept_as_samples_that_still_show_one_changed_channel(
    tmp_path: Path,
) -> None:
    from pytest_mlscope.divergence import SAMPLE, Sampled

    big = np.random.default_rng(1).standard_normal((1, 64, 56, 56)).astype(np.float32)
    changed = big.copy()
    changed[0, 37] += 0.5  # one filter of 64 off: its channel, 1/64 of the values
    save_layers(tmp_path / "golden.npz", [("stem", STEM), ("conv", big)])
    save_layers(tmp_path / "item.npz", [("stem", STEM), ("conv", changed)])
    golden, item = load_layers(tmp_path / "golden.npz"), load_layers(tmp_path / "item.npz")
    assert golden is not None and item is not None
    kept = golden[1][1]
    assert isinstance(kept, Sampled) and kept.shape == big.shape and kept.values.size == SAMPLE
    assert (tmp_path / "golden.npz").stat().st_size < big.nbytes / 10
    found = first_divergence(golden, item, atol=1e-5, rtol=1e-4)
    assert (found.layer, found.agreeing) == ("conv", 1)
    assert found.max_abs == pytest.approx(0.5, rel=1e-3)
    # A sampled side against a whole one (the item's layers as a worker passes them in memory).
    assert (
        first_divergence(golden, [("stem", STEM), ("conv", big)], atol=1e-5, rtol=1e-4).layer
        is None
    )
