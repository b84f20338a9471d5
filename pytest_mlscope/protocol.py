"""The typed, versioned documents that cross the worker boundary and go to the store.

The worker protocol is coarse: one :class:`EvaluationRequest` in, one :class:`WorkerReply` out,
with bulky arrays (outputs) written as files in a shared work directory. The same documents are
used in-process, over a subprocess pipe and inside a container, so the host never changes what is
measured. ``PROTOCOL_VERSION`` changes whenever a field changes meaning.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pytest_mlscope.vocabulary import Scenario

# 2: a request is one pass; replies carry the traceback apart. 3: save_layer_outputs. 4: it
# goes with save_outputs too (a golden and its layers in one pass); large layers are sampled.
# 5: RoundRequest.renew. 6: a hold from inputs_path with no checks skips the accuracy pass (the
# extra workers of an interleave across stacks). 7: the pass is one typed field (``pass_``), not
# four flags; results carry the model's memory. 8: a cell's sequence length (tokenized text).
# 9: the generate scenario; results carry its per-token figures.
PROTOCOL_VERSION = 10


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Cell(_Document):
    """One point of the evaluation grid: model × framework × device × batch size (× sequence
    length, for text) × scenario.

    ``stack`` names one of several stacks of the same framework in a manifest (two ONNX Runtime
    releases in two images, say); it shows in the id as ``onnxruntime@ort131``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    framework: str
    device: str = "cpu"
    batch_size: int = 1
    scenario: Scenario = "single_stream"
    stack: str | None = None
    # Tokens per sample, for a model whose input is tokenized text (None otherwise).
    sequence_length: int | None = None

    @property
    def framework_id(self) -> str:
        return f"{self.framework}@{self.stack}" if self.stack else self.framework

    @property
    def param_id(self) -> str:
        seq = f"-seq{self.sequence_length}" if self.sequence_length is not None else ""
        return f"{self.framework_id}-{self.device}-bs{self.batch_size}{seq}-{self.scenario}"

    @property
    def id(self) -> str:
        return f"{self.model}[{self.param_id}]"

    def __str__(self) -> str:
        return self.id


class MeasureOptions(_Document):
    warmup: int = 5
    min_count: int = 50
    min_duration_s: float = 2.0
    max_duration_s: float = 60.0
    rounds: int = 1
    precision: float | None = None  # target relative half-width of the median's 95 % interval


class ArtifactRef(_Document):
    """A model file the worker loads, with the checksum it must have."""

    format: str
    path: str
    sha256: str
    metadata: dict[str, object] = {}
    # Who recorded the checksum (a manifest line, the cache's record), for the mismatch message.
    expected_by: str = ""


class Interleave(_Document):
    """The A side of an interleaved A/B measurement, timed in the same worker as the item (B).

    A is the baseline's artifact (the same file, or the one a model edit replaced), without the
    injected slowdown. Rounds of A and B alternate, in random order within each pair, so drift on
    the machine hits both sides alike and cancels in the per-pair ratio.
    """

    artifact: ArtifactRef
    inject_slowdown: float = 0.0
    seed: int = 0
    # The verdict's rule as the stopping rule: blocks of pairs are added until the item is
    # decided at this threshold (measure.LOOKS blocks at most); None: one block.
    threshold: float | None = None
    comparisons: int = 1


class AccuracyPass(_Document):
    """Load and check, time nothing: the agreement reference's outputs, a golden being written,
    a failed agreement's layer outputs."""

    kind: Literal["accuracy"] = "accuracy"
    # Also write every layer's output for the first batch here (npz, pytest_mlscope.divergence),
    # when the predictor can expose them: how a failed agreement finds the first layer where two
    # frameworks part.
    save_layer_outputs: str | None = None


class TimingPass(_Document):
    """Time the model: alone, or interleaved with the baseline's A side in this worker."""

    kind: Literal["timing"] = "timing"
    # Time the item interleaved with this A side (``pytest --mlscope-interleave``).
    interleave: Interleave | None = None


class CountPass(_Document):
    """Count instructions instead of timing (a worker under callgrind, callgrind.launcher):
    rounds of calls; the accuracy pass still runs the checks asked for."""

    kind: Literal["count"] = "count"
    rounds: int = 5
    # Calls per round: enough to execute about this many instructions (callgrind.count_calls).
    round_instructions: float = 3_000_000


class HoldPass(_Document):
    """Load, check accuracy and warm up, then keep the model loaded for RoundRequests instead of
    timing: the host alternates rounds between two workers (two stacks of one framework)."""

    kind: Literal["hold"] = "hold"


# typing.Union, not ``|``: the Caffe image's Python 3.9 evaluates these at import.
Pass = Annotated[
    Union[AccuracyPass, TimingPass, CountPass, HoldPass],  # noqa: UP007
    Field(discriminator="kind"),
]
PassKind = Literal["accuracy", "timing", "count", "hold"]


class EvaluationRequest(_Document):
    """Load and check one cell's model, then run one pass on it (``pass_``, one of the
    ``Pass`` documents): what a pass needs of its own lives in it, so a request cannot ask for
    two; what the passes share (the cell, the artifact, the inputs) lives here, and the few
    combinations of those that mean nothing are refused when the request is made or parsed,
    before any model is loaded."""

    version: int = PROTOCOL_VERSION
    kind: Literal["evaluate"] = "evaluate"
    cell: Cell
    manifest_path: str
    artifact: ArtifactRef
    measure: MeasureOptions
    work_dir: str
    pass_: Pass = Field(default_factory=TimingPass)
    # Outputs of the reference framework on the same inputs (npz), for the agreement check.
    reference_outputs: str | None = None
    # Where to write this cell's accuracy-pass outputs (npz), so other items can agree with it.
    save_outputs: str | None = None
    # Extra predictors named in the project's ini (name -> "module:Class"), beside entry points.
    predictors: dict[str, str] = {}
    # Run only these accuracy checks (None: all the manifest asks for); writing goldens runs none.
    checks: list[str] | None = None
    # Extra work per timed call, as a fraction of the model's latency (gate self-tests only).
    inject_slowdown: float = 0.0
    # A held A side timed beside a slowed B in another worker: its calls go through the same
    # wrapper with nothing added (slowdown.matched), so the sides differ by the injected work.
    matched_wrapper: bool = False
    # After a timing or hold pass: profile at this level (pytest_mlscope.tracing), this many
    # predictions.
    trace_level: str = "none"
    trace_iterations: int = 20
    trace_dir: str | None = None  # where trace files go (default: work_dir/traces)
    # Write the timed input batches here (npz), and read them from inputs_path instead of
    # preparing the dataset: how a count pass, or one more worker holding the model, gets the
    # inputs the first one used.
    save_inputs: str | None = None
    inputs_path: str | None = None
    # The generate scenario: new tokens per generation (performance.new_tokens).
    new_tokens: int = 16

    @property
    def pass_kind(self) -> PassKind:
        return self.pass_.kind

    @property
    def interleave(self) -> Interleave | None:
        """The A side a timing pass interleaves with; None for every other pass."""
        return self.pass_.interleave if isinstance(self.pass_, TimingPass) else None

    @property
    def save_layer_outputs(self) -> str | None:
        return self.pass_.save_layer_outputs if isinstance(self.pass_, AccuracyPass) else None

    @model_validator(mode="after")
    def _consistent(self) -> EvaluationRequest:
        if self.inputs_path is not None and self.checks != []:
            raise ValueError(
                "inputs_path gives no dataset to check accuracy on: it needs checks=[]"
            )
        if self.inputs_path is not None and self.save_inputs is not None:
            raise ValueError("inputs_path and save_inputs exclude each other")
        return self


class RoundRequest(_Document):
    """One timing round on the model a ``hold`` evaluation left loaded in this worker.

    Rounds of two workers, alternated by the host, time two software stacks (two images) on the
    same machine in the same minutes, so drift hits both, as ``--mlscope-interleave`` does for two
    models in one worker. IPC happens between rounds, never inside a sample.
    """

    version: int = PROTOCOL_VERSION
    kind: Literal["round"] = "round"
    cell: Cell
    measure: MeasureOptions  # this round's floors (count, duration); its warm-up is not repeated
    release: bool = False  # close the held model instead of timing
    # Time a fresh instance of the held model (loaded, inputs prepared, warmed up): two loaded
    # instances of one file differ by their memory layout for as long as they live, so the
    # host renews both sides for each pair (passes._Instances does the same in one worker).
    renew: bool = False


# What a worker reads from its input: the kind field says which document (``round``, or an
# evaluation). typing.Union, not ``|``: the Caffe image's Python 3.9 evaluates this at import.
Request = Annotated[Union[EvaluationRequest, RoundRequest], Field(discriminator="kind")]  # noqa: UP007


class Summary(_Document):
    """Latency statistics in seconds; throughput in items (not batches) per second."""

    count: int
    mean: float
    std: float
    min: float
    median: float
    p90: float
    p99: float
    max: float
    median_ci_low: float
    median_ci_high: float
    throughput: float
    batch_size: int


class GenerationSummary(_Document):
    """A generate item's figures, token by token, over the timing pass's generations (the
    item's own side: an interleaved baseline's generations are not in them).

    Time to first token is the prompt's prefill and the first pick; the inter-token latencies
    are every gap between consecutive new tokens of every generation; decode tokens/s is each
    generation's new tokens after the first over the time they took, the median over
    generations. Per-generation figures are kept for judging, one per timed call (in the order
    of the result's samples and rounds), and the interleaved A side's beside them
    (``paired_``, in the order of ``paired_samples_ns``): compare.generation judges each phase on
    the pairs.
    """

    new_tokens: int
    prompt_tokens: int
    generations: int
    ttft_ms: float
    ttft_p90_ms: float
    itl_p50_ms: float
    itl_p90_ms: float
    itl_p99_ms: float
    tokens_per_s: float
    ttft_ns: list[int] = Field(default_factory=list)  # per generation
    decode_ns: list[int] = Field(default_factory=list)  # first to last new token, per generation
    paired_ttft_ns: list[int] = Field(default_factory=list)
    paired_decode_ns: list[int] = Field(default_factory=list)


class GenerationRound(_Document):
    """One host-driven round's generations on a held model (two stacks' workers timed in
    turn): the host joins the rounds of both sides into the item's GenerationSummary."""

    new_tokens: int
    prompt_tokens: int
    ttft_ns: list[int]
    decode_ns: list[int]
    gaps_ns: list[int]  # every gap between consecutive new tokens, for the percentiles


class ColdStart(_Document):
    load_s: float
    first_inference_s: float


class AccuracyCheck(_Document):
    name: str
    passed: bool
    value: float | None = None
    detail: str = ""


class AccuracyReport(_Document):
    checks: list[AccuracyCheck] = []
    samples: int = 0
    top1: float | None = None
    top5: float | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def check(self, name: str) -> AccuracyCheck | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def failures(self) -> list[AccuracyCheck]:
        return [c for c in self.checks if not c.passed]

    def headline(self) -> str:
        """A short text for tables: top-1 when known, else the checks that ran."""
        if self.top1 is not None:
            text = f"top1={self.top1:.3f}"
        elif self.checks:
            text = ",".join(c.name for c in self.checks)
        else:
            return "-"
        return text if self.passed else f"FAIL {text}"


class PredictorInfo(_Document):
    framework: str
    version: str
    device: str
    details: dict[str, object] = {}


class LayerRow(_Document):
    """One layer as a framework ran it; times per inference, in microseconds."""

    layer: str
    op_type: str
    device: str = "cpu"
    calls: float = 1.0
    self_us: float
    total_us: float
    kernels: list[str] = Field(default_factory=list)  # what ran underneath, biggest first


# What a profiling pass gives (Predictor.profile): layer rows per inference, the profiled
# prediction times (µs), notes.
LayerProfile = tuple[list[LayerRow], list[float], list[str]]


class TraceInfo(_Document):
    """What the profiling pass recorded for one item."""

    level: str
    iterations: int = 0
    path: str | None = None  # Chrome Trace Event JSON, opens in Perfetto and chrome://tracing
    wall_s: float = 0.0  # the profiling pass's extra wall time
    step_us: float | None = None  # median profiled prediction, for comparing with the timing pass
    notes: list[str] = Field(default_factory=list)


class MemoryUse(_Document):
    """The worker's resident memory around one item, in bytes (pytest_mlscope.memory): what the
    process held before the model loaded, and its peak over loading the model and its first
    inference, then through the accuracy pass (every sample at the item's batch size). The
    timing pass is left out: an interleaved item loads its A side there, and a framework's
    arena grows over thousands of calls, so the window would differ by design."""

    before: int
    load_peak: int
    run_peak: int
    # On a GPU, the framework allocator's high-water mark on the device over the same window
    # (Predictor.device_memory_peak), bytes; None on CPU and where a framework keeps none.
    device_peak: int | None = None

    @property
    def model(self) -> int:
        """What the model took at its highest, weights and working memory: the gated figure."""
        return max(self.load_peak, self.run_peak) - self.before


class EvaluationResult(_Document):
    version: int = PROTOCOL_VERSION
    cell: Cell
    predictor: PredictorInfo
    artifact_sha256: str
    cold_start: ColdStart
    accuracy: AccuracyReport
    summary: Summary | None = None
    samples_ns: list[int] = Field(default_factory=list)
    # Samples per measurement round, in order; samples_ns is their concatenation.
    rounds: list[int] = Field(default_factory=list)
    # Interleaved A/B: the A side's samples and rounds; round i of A and of B form pair i.
    paired_samples_ns: list[int] = Field(default_factory=list)
    paired_rounds: list[int] = Field(default_factory=list)
    paired_artifact_sha256: str | None = None
    # The A side's predictor, when A ran in another worker (another stack, another image).
    paired_predictor: PredictorInfo | None = None
    # Across workers: which of the several worker processes of each side timed pair i, as
    # (A's worker, B's worker); the spread between processes widens the verdict's interval.
    paired_workers: list[tuple[int, int]] = Field(default_factory=list)
    # Instructions per call, one figure per round, from the count pass (callgrind).
    instructions: list[float] = Field(default_factory=list)
    layers: list[LayerRow] = Field(default_factory=list)
    trace: TraceInfo | None = None
    # The machine during the timing pass (pytest_mlscope.telemetry): CPU load, RSS, clocks, GPU.
    telemetry: dict[str, float | int | str | bool] = Field(default_factory=dict)
    # The model's memory, measured in a worker that served nothing before (the session starts
    # one per timed item); None where not measurable (in-process, not Linux).
    memory: MemoryUse | None = None
    # The generate scenario's per-token figures; None for the other scenarios. Across two
    # stacks' workers each round's answer carries its generations (generation_round) and the
    # host joins them into the item's figures.
    generation: GenerationSummary | None = None
    generation_round: GenerationRound | None = None
    outputs_path: str | None = None
    worker_pid: int = 0
    wall_s: float = 0.0


class WorkerReply(_Document):
    version: int = PROTOCOL_VERSION
    ok: bool
    result: EvaluationResult | None = None
    error: str | None = None  # one line: what failed, and where
    error_type: str | None = None
    traceback: str | None = None  # an unexpected exception's, kept out of the message
