"""``mlscope init MODEL_FILE…``: a starter manifest from the model files' own signatures.

A team has model files, not manifests. Each file's framework follows from its format
(``zoo.cache.file_format``); its input and output names, the per-sample shape and the dtype are
read with the framework's own API (ONNX graph inputs, an exported program's example inputs, a
traced TorchScript graph, a Keras model's inputs). Several files must agree on them, and
then agree on their outputs too (``accuracy.agreement``, torch the reference when there is one).
The manifest names a golden file for ``mlscope golden`` to write, is validated as any manifest
is, and lands beside the first model file: a manifest's paths may not leave its folder.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_mlscope.cli.common import EXIT_OK, shown_path
from pytest_mlscope.errors import MlscopeError
from pytest_mlscope.manifest.schema import NAME_PATTERN

FRAMEWORK_OF = {
    "onnx": "onnxruntime",
    "torch_export": "torch",
    "torchscript": "torch",
    "keras": "tensorflow",
    "saved_model": "tensorflow",
}
DTYPES = ("float32", "float16", "int64", "int32", "uint8")
SCRIPT_DTYPES = {
    "Float": "float32", "Half": "float16", "Long": "int64", "Int": "int32", "Byte": "uint8"
}  # fmt: skip
RANDOM_SAMPLES = 16


def register(commands: argparse._SubParsersAction) -> None:
    init = commands.add_parser(
        "init",
        help="write a starter manifest from model files (.onnx, .pt2, .pt, .keras, a SavedModel)",
    )
    init.add_argument("files", nargs="+", metavar="MODEL_FILE", help="the team's model files")
    init.add_argument(
        "--dataset",
        metavar="NPZ",
        help="inputs (an array named 'inputs', optional 'labels'); default: random float "
        "inputs written beside the manifest",
    )
    init.add_argument("--name", help="the model's name (default: the first file's stem)")
    init.add_argument(
        "--output", metavar="YAML", help="where to write (default: NAME.yaml beside the files)"
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing manifest")
    init.set_defaults(handler=cmd_init)


@dataclass(frozen=True)
class Signature:
    """What one file says about the model's interface; ``shape`` is per sample (no batch)."""

    framework: str
    input_name: str | None  # None: the format keeps no name worth reusing
    shape: tuple[int | None, ...] | None  # None: the file does not record it
    dtype: str | None
    output_name: str | None


def cmd_init(args: argparse.Namespace) -> int:
    from pytest_mlscope.manifest import load_manifest
    from pytest_mlscope.zoo.files import file_format

    files = [Path(f).resolve() for f in args.files]
    signatures: dict[Path, Signature] = {}
    for path in files:
        if not path.exists():
            raise MlscopeError(f"{path}: no such model file")
        fmt = file_format(path)
        if fmt not in FRAMEWORK_OF:
            known = ", ".join(sorted({".onnx", ".pt2", ".pt", ".ts", ".keras"}))
            raise MlscopeError(
                f"{path}: not a model file mlscope init reads (known: {known}, and a SavedModel "
                "folder); "
                + (
                    f"a {fmt} model loads, but its interface is not read here: write its "
                    "model.source.path entry by hand (the Manifests page of the docs)"
                    if fmt
                    else "other formats are named in model.source.path by hand"
                )
            )
        signatures[path] = signature(path, fmt)
    frameworks = [s.framework for s in signatures.values()]
    if len(set(frameworks)) != len(frameworks):
        raise MlscopeError(
            "one file per framework: "
            + ", ".join(f"{p.name} ({s.framework})" for p, s in signatures.items())
        )
    name = args.name or re.sub(r"[^a-z0-9_]+", "_", files[0].stem.lower()).strip("_") or "model"
    if not re.fullmatch(NAME_PATTERN, name):
        raise MlscopeError(f"--name: expected lowercase letters, digits and _, got {name!r}")
    output = Path(args.output).resolve() if args.output else files[0].parent / f"{name}.yaml"
    if output.exists() and not args.force:
        raise MlscopeError(f"{output} exists; pass --force to overwrite it")
    folder = output.parent
    for path in files:
        if not path.is_relative_to(folder):
            raise MlscopeError(
                f"{path} is not inside {folder}: a manifest's files live in its folder or below "
                "it (write the manifest higher up with --output)"
            )
    data = Path(args.dataset).resolve() if args.dataset else None
    if data is not None and not data.is_relative_to(folder):
        raise MlscopeError(f"{data} is not inside {folder}, the manifest's folder")
    interface = _agreed(signatures, data)
    written: list[Path] = []
    if data is None:
        data = folder / f"{name}-inputs.npz"
        if data.exists() and not args.force:
            raise MlscopeError(f"{data} exists; pass --force to overwrite it")
        _random_inputs(data, interface)
        written.append(data)
    output.parent.mkdir(parents=True, exist_ok=True)
    before = output.read_bytes() if output.is_file() else None  # --force: kept until it validates
    output.write_text(manifest_text(name, signatures, interface, data, folder))
    written.append(output)
    try:
        manifest = load_manifest(output, require_files=False)  # as strict as any manifest
    except MlscopeError:
        for path in written:  # nothing half-made is left behind
            path.unlink(missing_ok=True)
        if before is not None:
            output.write_bytes(before)
        raise
    print(f"wrote {shown_path(output)}: {manifest.name}, {_summary(signatures, interface)}")
    golden = manifest.accuracy.golden
    assert golden is not None
    print(f"next: mlscope golden {shown_path(output)}   (writes {golden.path}; review it)")
    print("then: pytest --mlscope")
    return EXIT_OK


def signature(path: Path, fmt: str) -> Signature:
    """The file's single input and first output, read by its framework."""
    reader = {
        "onnx": _onnx,
        "torch_export": _torch_export,
        "torchscript": _torchscript,
        "keras": _keras,
        "saved_model": _saved_model,
    }[fmt]
    try:
        return reader(path)
    except MlscopeError:
        raise
    except ImportError as exc:
        raise MlscopeError(f"{path}: reading it needs {exc.name}, which is not installed") from exc
    except Exception as exc:  # a damaged or foreign file: say which, never a traceback
        raise MlscopeError(f"{path}: cannot be read as {fmt}: {type(exc).__name__}: {exc}") from exc


def _one_input(path: Path, count: int) -> None:
    if count != 1:
        raise MlscopeError(
            f"{path}: the model takes {count} inputs; pytest-mlscope feeds a model one input"
        )


def _per_sample(path: Path, dims: list[Any]) -> tuple[int | None, ...]:
    """The shape without its batch axis; None for an axis the file leaves open."""
    if not dims:
        raise MlscopeError(f"{path}: the input is a scalar; expected a batch axis first")
    return tuple(d if isinstance(d, int) and d > 0 else None for d in dims[1:])


def _dtype(path: Path, name: str) -> str:
    if name not in DTYPES:
        raise MlscopeError(
            f"{path}: input dtype {name} is not one pytest-mlscope feeds ({', '.join(DTYPES)})"
        )
    return name


def _onnx(path: Path) -> Signature:
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    _one_input(path, len(inputs))
    if not inputs[0].type.HasField("tensor_type"):
        raise MlscopeError(f"{path}: input {inputs[0].name} is not a tensor")
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    return Signature(
        "onnxruntime",
        inputs[0].name,
        _per_sample(path, dims) if tensor.HasField("shape") else None,
        _dtype(path, dtype),
        graph.output[0].name if graph.output else None,
    )


def _torch_export(path: Path) -> Signature:
    import torch

    program = torch.export.load(str(path))
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    names = program.graph_signature.user_inputs
    _one_input(path, len(names))
    value = placeholders[names[0]].meta.get("val")
    if value is None:
        raise MlscopeError(f"{path}: the exported program records no input shape")
    dims = [int(d) if isinstance(d, int) else None for d in value.shape]
    return Signature(
        "torch",
        str(names[0]),
        _per_sample(path, dims),
        _dtype(path, str(value.dtype).removeprefix("torch.")),
        None,
    )


def _torchscript(path: Path) -> Signature:
    import torch

    module = torch.jit.load(str(path), map_location="cpu")
    inputs = list(module.graph.inputs())[1:]  # the first is the module itself
    _one_input(path, len(inputs))
    kind = inputs[0].type()  # a saved archive usually keeps neither sizes nor dtype
    sizes = kind.sizes() if hasattr(kind, "sizes") else None
    scalar = kind.scalarType() if hasattr(kind, "scalarType") else None
    return Signature(
        "torch",
        None,
        _per_sample(path, list(sizes)) if sizes is not None else None,
        _dtype(path, SCRIPT_DTYPES.get(scalar, scalar)) if scalar is not None else None,
        None,
    )


def _keras(path: Path) -> Signature:
    import keras

    model = keras.models.load_model(str(path), compile=False)
    _one_input(path, len(model.inputs))
    tensor = model.inputs[0]
    # The output's layer name (``head``), not the symbolic tensor's (``keras_tensor_7``).
    names = list(getattr(model, "output_names", None) or [])
    return Signature(
        "tensorflow",
        str(getattr(tensor, "name", "input")).split(":")[0],
        _per_sample(path, list(tensor.shape)),
        _dtype(path, np.dtype(tensor.dtype).name),
        str(names[0]) if names else None,
    )


def _saved_model(path: Path) -> Signature:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures.get("serving_default")
    if signature is None:
        raise MlscopeError(f"{path}: the SavedModel has no serving_default signature")
    _, named = signature.structured_input_signature
    _one_input(path, len(named))
    name, spec = next(iter(named.items()))
    outputs = sorted(signature.structured_outputs)
    return Signature(
        "tensorflow",
        name,
        _per_sample(path, list(spec.shape)),
        _dtype(path, spec.dtype.name),
        outputs[0] if outputs else None,
    )


def _agreed(signatures: dict[Path, Signature], data: Path | None) -> dict[str, Any]:
    """The one interface every file and the dataset agree on: names, shape, dtype."""
    shapes = {s.shape for s in signatures.values() if s.shape is not None}
    dtypes = {s.dtype for s in signatures.values() if s.dtype is not None}
    if len(dtypes) > 1:
        raise MlscopeError(f"the files disagree on the input dtype: {_each(signatures, 'dtype')}")
    shape = _merged(shapes, signatures) if shapes else None
    dtype = next(iter(dtypes), None)
    if data is not None:
        if not data.is_file():
            raise MlscopeError(f"{data}: no such dataset file")
        with np.load(data, allow_pickle=False) as archive:
            if "inputs" not in archive:
                raise MlscopeError(f"{data}: expected an array named 'inputs'")
            sample = tuple(archive["inputs"].shape[1:])
            dtype = dtype or _dtype(data, archive["inputs"].dtype.name)
        if shape is None:
            shape = sample
        if len(sample) != len(shape) or any(
            want is not None and want != got for want, got in zip(shape, sample, strict=False)
        ):
            raise MlscopeError(
                f"{data}: its samples have shape {list(sample)}, the model takes "
                f"{_shape_text(shape)} per sample"
            )
        shape = sample
    if shape is None or dtype is None:
        raise MlscopeError(
            f"{', '.join(p.name for p in signatures)} record no input shape or dtype (a saved "
            "TorchScript archive keeps neither): pass --dataset, or a file that records them "
            "(.onnx, .pt2) beside it"
        )
    if any(d is None for d in shape):
        raise MlscopeError(
            f"the input's shape {_shape_text(shape)} leaves axes open: pass --dataset with "
            "samples of the shape to measure"
        )
    # ONNX names are the ones the team chose at export; torch's are its argument names.
    ordered = sorted(signatures.values(), key=lambda s: s.framework != "onnxruntime")
    name = next((s.input_name for s in ordered if s.input_name), None)
    output = next((s.output_name for s in ordered if s.output_name), None)
    return {
        "name": name or "input",
        "shape": [int(d) for d in shape],  # type: ignore[arg-type]
        "dtype": dtype,
        "output": output or "output",
    }


def _merged(
    shapes: set[tuple[int | None, ...]], signatures: dict[Path, Signature]
) -> tuple[int | None, ...]:
    ranks = {len(s) for s in shapes}
    if len(ranks) > 1:
        raise MlscopeError(f"the files disagree on the input's shape: {_each(signatures, 'shape')}")
    merged: list[int | None] = [None] * ranks.pop()
    for shape in shapes:
        for axis, size in enumerate(shape):
            if size is None:
                continue
            if merged[axis] not in (None, size):
                raise MlscopeError(
                    f"the files disagree on the input's shape: {_each(signatures, 'shape')}"
                )
            merged[axis] = size
    return tuple(merged)


def _each(signatures: dict[Path, Signature], field: str) -> str:
    def text(value: Any) -> str:
        return _shape_text(value) if field == "shape" else str(value)

    return ", ".join(
        f"{p.name} {text(getattr(s, field))}"
        for p, s in signatures.items()
        if getattr(s, field) is not None
    )


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _random_inputs(path: Path, interface: dict[str, Any]) -> None:
    """Fixed-seed standard-normal samples: enough to time the model and to check that the files
    agree. Integer inputs (token ids, class indices) have a valid range only the team knows."""
    if not interface["dtype"].startswith("float"):
        raise MlscopeError(
            f"the input is {interface['dtype']}: random values may be out of the model's range "
            "(token ids, indices); pass --dataset with real inputs"
        )
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((RANDOM_SAMPLES, *interface["shape"]))
    np.savez(path, inputs=inputs.astype(interface["dtype"]))


def manifest_text(
    name: str,
    signatures: dict[Path, Signature],
    interface: dict[str, Any],
    data: Path,
    folder: Path,
) -> str:
    import yaml

    def relative(path: Path) -> str:
        return path.relative_to(folder).as_posix()

    frameworks = [s.framework for s in signatures.values()]
    reference = "torch" if "torch" in frameworks else frameworks[0]
    accuracy: dict[str, Any] = {"golden": f"goldens/{name}.npz"}
    if len(frameworks) > 1:
        accuracy["agreement"] = {"reference": reference, "atol": 1.0e-4, "rtol": 1.0e-3}
    sources = {s.framework: relative(p) for p, s in signatures.items()}
    document = {
        "name": name,
        "description": "Written by mlscope init from " + ", ".join(p.name for p in signatures),
        "framework": [{"name": f} for f in frameworks],
        "model": {"source": {"path": sources}},
        "inputs": [{key: interface[key] for key in ("name", "shape", "dtype")}],
        "outputs": [{"name": interface["output"]}],
        "dataset": {"name": "npz", "path": relative(data)},
        "accuracy": accuracy,
        "performance": {"batch_sizes": [1], "scenarios": ["single_stream"]},
    }  # fmt: skip
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100)


def _summary(signatures: dict[Path, Signature], interface: dict[str, Any]) -> str:
    frameworks = " and ".join(s.framework for s in signatures.values())
    return (
        f"{frameworks}, input {interface['name']} {interface['shape']} {interface['dtype']}, "
        f"output {interface['output']}"
    )
