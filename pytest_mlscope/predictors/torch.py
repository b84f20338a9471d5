"""PyTorch predictor: eval mode, ``torch.inference_mode``, on the CPU or a CUDA GPU.

On a GPU each prediction ends with ``torch.cuda.synchronize()``: a sample is the inference's
time, not the time to queue its kernels. Inputs are copied to the GPU in ``prepare_input`` and
outputs back in ``to_numpy``, outside the samples (``benchmarks/gpu_check.py`` measures both).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from pytest_mlscope.errors import ArtifactError, StackUnavailable
from pytest_mlscope.predictors.base import Predictor, worker_threads
from pytest_mlscope.protocol import ArtifactRef, LayerProfile, PredictorInfo


class TorchPredictor(Predictor):
    name = "torch"
    formats = ("torch_state_dict", "torch_export", "torchscript")
    distributions = ("torch",)
    extra = "torch"
    devices = ("cpu", "gpu")

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.module: Any = None
        self._mode: Any = None
        self._program: Any = None  # a torch.export program: its module tree, for layer tables

    def import_framework(self) -> None:
        import torch  # noqa: F401

    def load(self, artifact: ArtifactRef) -> None:
        import torch

        threads = worker_threads()
        if threads:
            torch.set_num_threads(threads)
            # Settable once, before any inter-op work: a fresh worker has done none; a process
            # that ran torch already keeps its pool.
            with contextlib.suppress(RuntimeError):
                torch.set_num_interop_threads(threads)
        if artifact.format == "torch_state_dict":
            factory = self.named_callable(artifact, "module", "Class")
            kwargs = dict(artifact.metadata.get("kwargs", {}) or {})  # type: ignore[call-overload]
            module = factory(**kwargs)
            try:
                module.load_state_dict(_state_dict(artifact))
            except RuntimeError as exc:  # missing, unexpected or misshapen weights
                raise ArtifactError(
                    f"{artifact.path}: the state dict does not fit {artifact.metadata['module']}"
                    f"({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}): "
                    + " ".join(str(exc).split())[:400]
                ) from None
        elif artifact.format == "torch_export":
            # The program keeps the mode it was exported in; its module refuses eval().
            self._program = torch.export.load(artifact.path)
            module = self._program.module()
        elif artifact.format == "torchscript":
            module = torch.jit.load(artifact.path, map_location="cpu")
        else:
            raise ArtifactError(f"{artifact.path}: torch cannot load format {artifact.format!r}")
        if self._program is None:
            module.eval()
        if self.device == "gpu":
            if not torch.cuda.is_available():
                raise StackUnavailable(f"torch {torch.__version__} sees no CUDA GPU")
            module = module.to("cuda")
        self.module = module
        # Entered once for the predictor's life, not per call: entering and leaving costs ~2 µs,
        # 2-5 % of a small model's latency (benchmarks/overhead.py). The worker calls load,
        # predict and close on one thread, which is what this thread-local mode needs.
        self._mode = torch.inference_mode()
        self._mode.__enter__()

    def prepare_input(self, batch: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(batch))
        return tensor.to("cuda") if self.device == "gpu" else tensor

    def predict(self, prepared: Any) -> Any:
        output = self.module(prepared)
        if self.device == "gpu":
            import torch

            torch.cuda.synchronize()
        return output

    def generate(self, prepared: Any, new_tokens: int, stamps: list[int]) -> list[int]:
        """Greedy decoding with the module's key/value cache, in the call convention of Hugging
        Face causal LMs: ``module(ids, past_key_values=cache)`` returns the logits and the
        cache, as an object (``.logits``, ``.past_key_values``) or a tuple, in that order."""
        import time

        clock = time.perf_counter_ns
        logits, cache = _logits_and_cache(self.module(prepared))
        tokens: list[int] = []
        while True:
            chosen = logits[:, -1].argmax(dim=-1, keepdim=True)
            tokens.append(int(chosen))  # a device sync on GPU: the token is known here
            stamps.append(clock())
            if len(tokens) == new_tokens:
                return tokens
            logits, cache = _logits_and_cache(self.module(chosen, past_key_values=cache))

    def reset_device_memory_peak(self) -> None:
        if self.device == "gpu":
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

    def device_memory_peak(self) -> int | None:
        if self.device != "gpu":
            return None
        import torch

        return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None

    def to_numpy(self, output: Any) -> np.ndarray:
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output.detach().cpu().numpy()

    def profile(
        self, prepared: Any, iterations: int, level: str, timeline: Any, trace_dir: Any
    ) -> LayerProfile:
        from pytest_mlscope.tracing.torch_profile import profile_torch

        device = "cuda" if self.device == "gpu" else self.device
        if self._program is None:
            return profile_torch(
                self.module, self.predict, prepared, iterations, level, timeline, device
            )
        import torch

        tree = torch.export.unflatten(self._program)
        if self.device == "gpu":
            tree = tree.to("cuda")

        def hooked(batch: Any) -> Any:
            output = tree(batch)
            if self.device == "gpu":
                torch.cuda.synchronize()
            return output

        rows, plain, notes = profile_torch(
            tree, self.predict, prepared, iterations, level, timeline, device,
            hooked_call=hooked, op_types=_exported_types(self._program),
        )  # fmt: skip
        notes.append(
            "an exported program: timed as exported, its layers found in the same ops "
            "rebuilt into the source's module tree (torch.export.unflatten)"
        )
        return rows, plain, notes

    def layer_outputs(self, prepared: Any) -> list[tuple[str, np.ndarray]] | None:
        """Forward hooks on every named module; an exported program's modules come from the
        same ops unflattened into the source's tree. TorchScript keeps no Python modules to
        hook."""
        import torch

        if self._program is not None:
            tree = torch.export.unflatten(self._program)
            if self.device == "gpu":
                tree = tree.to("cuda")
        elif isinstance(self.module, torch.jit.ScriptModule):
            return None
        else:
            tree = self.module
        captured: list[tuple[str, np.ndarray]] = []

        def hook(name: str) -> Any:
            def record(module: Any, args: Any, output: Any) -> None:
                if isinstance(output, (tuple, list)):  # attention: (output, weights)
                    output = output[0] if output else None
                if isinstance(output, torch.Tensor):
                    captured.append((name, output.detach().float().cpu().numpy().copy()))

            return record

        handles = [m.register_forward_hook(hook(n)) for n, m in tree.named_modules() if n]
        try:
            tree(prepared)
        finally:
            for handle in handles:
                handle.remove()
        return captured

    def close(self) -> None:
        self.module = None
        self._program = None
        mode, self._mode = self._mode, None
        if mode is not None:
            mode.__exit__(None, None, None)

    def info(self) -> PredictorInfo:
        import torch

        return self.described(
            torch.__version__,
            intra_op_threads=torch.get_num_threads(),
            inter_op_threads=torch.get_num_interop_threads(),
            gpu=torch.cuda.get_device_name() if self.device == "gpu" else None,
            cuda=torch.version.cuda,
        )


def _logits_and_cache(output: Any) -> tuple[Any, Any]:
    if hasattr(output, "logits"):
        return output.logits, output.past_key_values
    if isinstance(output, (tuple, list)) and len(output) >= 2:
        return output[0], output[1]
    raise ArtifactError(
        "a generate item's torch model returns its logits and its key/value cache: expected "
        f"an object with .logits and .past_key_values or a tuple (logits, cache), got "
        f"{type(output).__name__}"
    )


def _exported_types(program: Any) -> dict[str, str]:
    """Module path -> the source's module class, from the nodes' module stacks: an unflattened
    program's modules are all ``InterpreterModule``."""
    found: dict[str, str] = {}
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        for path, kind in stack.values():
            found.setdefault(path, str(kind).rsplit(".", 1)[-1].strip("'>"))
    return found


def _state_dict(artifact: ArtifactRef) -> Any:
    """The weights of a ``torch.save``'d state dict, or of a training checkpoint that holds one
    (``{"model_state_dict": ..., "optimizer_state_dict": ...}``, as torch's tutorials save
    them). Read with ``weights_only``: a state dict never needs arbitrary unpickling."""
    import torch

    try:
        state = torch.load(artifact.path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(
            f"{artifact.path}: not a state dict torch can read with weights_only=True (a whole "
            f"pickled module? save model.state_dict() instead): {str(exc).splitlines()[0]}"
        ) from None
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        nested = [k for k in ("model_state_dict", "state_dict", "model") if k in state]
        if nested and isinstance(state[nested[0]], dict):
            state = state[nested[0]]
    if not isinstance(state, dict):
        raise ArtifactError(f"{artifact.path}: expected a state dict, got a {type(state).__name__}")
    return state
