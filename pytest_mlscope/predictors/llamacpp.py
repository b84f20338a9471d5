"""llama.cpp predictor (``llama-cpp-python``): a GGUF file as shipped, quantized, on the CPU.

It is the runtime most teams use for language models on CPUs, so a decoder's items compare the
quantized file as served with the framework a model was trained in. The prompt's token ids come
from the manifest's tokenizer, like every framework's, and are fed as ids (llama.cpp's own
tokenizer is not used): every framework of a manifest gets the same prompt.

``predict`` is one forward pass over the ids from an empty context: the next-token logits at the
last position, [1, vocab]. ``generate`` is llama.cpp's own loop: the prompt evaluated as one
batch, then one token at a time on its key/value cache, the argmax of the logits llama.cpp
leaves for the last position each time.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.predictors.base import Predictor, worker_threads
from pytest_mlscope.protocol import ArtifactRef, PredictorInfo

# Positions a context holds: a prompt and its new tokens must fit. Its key/value cache is
# allocated at load (for SmolLM2-135M, 30 layers x 3 heads x 64 x 2 x f16: 47 MB at 2048).
CONTEXT = 2048


class LlamaCppPredictor(Predictor):
    name = "llamacpp"
    formats = ("gguf",)
    distributions = ("llama-cpp-python",)
    extra = "llamacpp"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.model: Any = None
        self.threads = 0

    def import_framework(self) -> None:
        import llama_cpp  # noqa: F401

    def load(self, artifact: ArtifactRef) -> None:
        import llama_cpp

        if artifact.format != "gguf":
            raise ArtifactError(
                f"{artifact.path}: llama.cpp loads GGUF files, not {artifact.format}"
            )
        # The worker's thread count when the host set one (the count pass), else every core,
        # as llama-cpp-python's own default does (it uses half of them for generation).
        self.threads = worker_threads() or os.cpu_count() or 1
        try:
            self.model = llama_cpp.Llama(
                model_path=artifact.path,
                n_ctx=CONTEXT,
                n_batch=CONTEXT,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                verbose=False,
            )
        except ValueError as error:  # what llama-cpp-python raises for a file it cannot load
            raise ArtifactError(f"{artifact.path}: llama.cpp cannot load it: {error}") from None

    def prepare_input(self, batch: np.ndarray) -> Any:
        if batch.ndim != 2 or batch.shape[0] != 1:
            raise ArtifactError(
                f"llama.cpp takes one sequence of token ids at a time: got shape {batch.shape}"
            )
        return [int(token) for token in batch[0]]

    def _logits(self) -> np.ndarray:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits(self.model.ctx)
        return np.ctypeslib.as_array(pointer, shape=(self.model.n_vocab(),))

    def predict(self, prepared: Any) -> Any:
        self.model.reset()  # an empty context: the next eval clears the key/value cache
        self.model.eval(prepared)
        return self._logits()[None, :].copy()

    def generate(self, prepared: Any, new_tokens: int, stamps: list[int]) -> list[int]:
        import time

        clock, model = time.perf_counter_ns, self.model
        model.reset()
        model.eval(prepared)
        tokens: list[int] = []
        while True:
            token = int(np.argmax(self._logits()))
            tokens.append(token)
            stamps.append(clock())
            if len(tokens) == new_tokens:
                return tokens
            model.eval([token])

    def close(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None

    def info(self) -> PredictorInfo:
        import llama_cpp

        metadata = dict(self.model.metadata) if self.model is not None else {}
        return self.described(
            getattr(llama_cpp, "__version__", None) or self.installed_version() or "",
            threads=self.threads,
            context=CONTEXT,
            file_type=metadata.get("general.file_type", ""),
            architecture=metadata.get("general.architecture", ""),
        )
