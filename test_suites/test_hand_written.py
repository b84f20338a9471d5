"""Hand-written model tests: what a team writes beside its manifests.

``mlscope_eval(model, framework=..., batch_size=...)`` evaluates one cell of a manifest (found by
model name in ``mlscope_manifests``) in the session's worker, stores the result with the run, and
returns it: ``result.accuracy`` (checks, top-1), ``result.summary`` (latency statistics in
seconds, throughput in items/s), ``result.samples_ns`` (raw samples) and ``result.cold_start``.
"""


def test_alexnet_agrees_with_the_torch_reference_on_onnxruntime(mlscope_eval):
    result = mlscope_eval("alexnet", framework="onnxruntime", batch_size=1)
    assert result.accuracy.passed, [check.detail for check in result.accuracy.failures]
    agreement = result.accuracy.check("agreement")
    assert agreement is not None and agreement.passed


def test_digits_cnn_keeps_its_accuracy_on_both_frameworks(mlscope_eval):
    for framework in ("torch", "onnxruntime"):
        result = mlscope_eval("digits_cnn", framework=framework, batch_size=8)
        assert result.accuracy.top1 >= 0.97, framework
