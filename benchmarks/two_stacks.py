"""Two ONNX Runtime releases, each in its own image, timed against each other on one machine.

The bundled manifests get a second onnxruntime entry (``stack: ort_other`` in
``mlscope/onnxruntime:<OTHER>-cpu``) and ``interleave_with: ort_other`` on the first (the host's
release in ``mlscope/onnxruntime:cpu``); ``pytest --mlscope --mlscope-runtime docker
--mlscope-interleave`` then alternates rounds of the two containers and judges on the pairs.
Printed: per model (bs1, single stream) the verdict, the ratio of the host's release over the
other and its interval.

Needs a Docker daemon and both images::

    mlscope containers build onnxruntime
    mlscope containers build onnxruntime --framework-version 1.31.1
    .venv/bin/python benchmarks/two_stacks.py                  # about 2 minutes
    .venv/bin/python benchmarks/two_stacks.py --other 1.30.0 --seconds 30 --threshold 0.01
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from pytest_mlscope.store import Store

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", default="1.31.1", help="the other onnxruntime release")
    parser.add_argument("--seconds", type=float, default=15.0, help="timing per side and item")
    parser.add_argument("--threshold", type=float, default=0.02)
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "alexnet"])
    args = parser.parse_args(argv)
    image = f"mlscope/onnxruntime:{args.other}-cpu"
    cache = os.environ.get("MLSCOPE_CACHE") or str(REPO / ".mlscope" / "artifacts")

    with tempfile.TemporaryDirectory(prefix="mlscope-stacks-") as scratch:
        project = Path(scratch)
        os.chmod(project, 0o755)  # the containers' unprivileged user reads the project
        shutil.copytree(REPO / "manifests", project / "manifests")
        for model in args.models:
            path = project / "manifests" / f"{model}.yaml"
            text = path.read_text()
            entry = re.search(r"  - name: onnxruntime\n(?:    .*\n)*", text)
            assert entry is not None, f"{path} has no onnxruntime entry"
            text = text.replace(
                entry.group(0),
                entry.group(0)
                + "    interleave_with: ort_other\n  - name: onnxruntime\n    stack: ort_other\n"
                + f'    container: {{amd64: {{cpu: "{image}"}}, arm64: {{cpu: "{image}"}}}}\n',
            )
            path.write_text(text)
        (project / "pytest.ini").write_text("[pytest]\nmlscope_manifests = manifests\n")
        selected = " or ".join(args.models)
        command = [
            sys.executable, "-m", "pytest", "--mlscope", "-p", "no:cacheprovider",
            "--mlscope-runtime", "docker", "--mlscope-interleave", "--mlscope-no-fail",
            "--mlscope-min-duration", str(args.seconds),
            "--mlscope-max-duration", str(2 * args.seconds),
            "--mlscope-threshold", str(args.threshold),
            "-k", f"({selected}) and onnxruntime and bs1 and single_stream and not ort_other",
        ]  # fmt: skip
        done = subprocess.run(
            command, cwd=project, env={**os.environ, "MLSCOPE_CACHE": cache}, text=True,
            capture_output=True,
        )  # fmt: skip
        if done.returncode not in (0, 1):
            print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
            return 2
        with Store.from_location(project / ".mlscope" / "results.db", create=False) as store:
            (run,) = store.runs()
            results = store.results(run.id)
    print(f"# onnxruntime (host's release, mlscope/onnxruntime:cpu) vs {args.other} ({image})")
    print(f"# {args.seconds:g} s per side, threshold {args.threshold:.1%}, bs1 single stream\n")
    print("| model | release | other | verdict | ratio | interval | pairs |")
    print("|---|---|---|---|---:|---|---:|")
    for record in results:
        verdict = record.verdict or {}
        low, high = verdict.get("ratio_low"), verdict.get("ratio_high")
        interval = f"{low - 1:+.1%} – {high - 1:+.1%}" if low and high else "-"
        ratio = verdict.get("ratio")
        print(
            f"| {record.cell.model} | {record.framework_version} | {args.other} | "
            f"{verdict.get('kind', record.outcome)} | "
            f"{f'{ratio - 1:+.1%}' if ratio else '-'} | {interval} | {verdict.get('pairs', '-')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
