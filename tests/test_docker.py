"""The docker runtime, for real: a Docker daemon, the stack images `.ci/run` builds, real models.

Without a daemon or the images these tests skip on a laptop and fail under CI=true. Build the
images with ``mlscope containers base`` (or any python:3.11 base) and
``mlscope containers build onnxruntime torch --base mlscope/base:bookworm``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
from _services import requires_ci

from conftest import copy_manifest
from pytest_mlscope import containers
from pytest_mlscope.protocol import Cell
from pytest_mlscope.session import MlscopeSession, Settings
from pytest_mlscope.store import Store

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"

QUICK = ("--mlscope-min-count", "5", "--mlscope-min-duration", "0.2", "--mlscope-warmup", "2")
ORT_IMAGE = containers.default_image("onnxruntime")
TORCH_IMAGE = containers.default_image("torch")


@pytest.fixture(scope="module")
def docker_client() -> object:
    try:
        return containers.client()
    except containers.ContainerError as exc:
        requires_ci(str(exc))
        raise


@pytest.fixture(scope="module")
def images(docker_client: object) -> list[str]:
    missing = [
        image
        for image in (ORT_IMAGE, TORCH_IMAGE)
        if containers.find_image(docker_client, image) is None
    ]
    if missing:
        requires_ci(
            f"no image {', '.join(missing)}: mlscope containers build onnxruntime torch "
            "--base mlscope/base:bookworm"
        )
    return [ORT_IMAGE, TORCH_IMAGE]


def _readable(*folders: Path | str) -> None:
    """pytest makes its temporary folders 0700; the container's unprivileged user must be let
    in (the runtime says so when it is not, rather than failing inside the container)."""
    for folder in folders:
        os.chmod(folder, 0o755)


def _project(pytester: pytest.Pytester, *names: str) -> Path:
    _readable(pytester.path, os.environ["MLSCOPE_CACHE"])
    target = pytester.path / "manifests"
    target.mkdir()
    for name in names:
        copy_manifest(name, target)
    if (MANIFESTS / "goldens").exists():
        shutil.copytree(MANIFESTS / "goldens", target / "goldens")
    pytester.makeini("[pytest]\nmlscope_manifests = manifests\n")
    return target


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--mlscope", "-p", "no:cacheprovider", *QUICK, *args)


def _store(pytester: pytest.Pytester) -> Store:
    return Store.from_location(pytester.path / ".mlscope" / "results.db", create=False)


def test_digits_and_alexnet_in_containers_match_the_subprocess_runtime(
    pytester: pytest.Pytester, images: list[str]
) -> None:
    """Same accuracy in the container as on the host; the image is in the fingerprint, and a
    host baseline is not compared with a container result as if they were one stack."""
    _project(pytester, "digits_cnn", "alexnet")
    select = ("-k", "bs1 and single_stream")
    host = _run(pytester, *select, "--mlscope-save-baseline", "host")
    host.assert_outcomes(passed=4)
    in_docker = _run(
        pytester, *select, "-m", "docker", "--mlscope-runtime", "docker", "--mlscope-baseline",
        "host", "--mlscope-no-fail", "-v",
    )  # fmt: skip
    in_docker.assert_outcomes(passed=4)
    in_docker.stdout.fnmatch_lines(["*alexnet?onnxruntime-cpu-bs1-single_stream? PASSED*"])
    store = _store(pytester)
    host_run, docker_run = sorted(store.runs(), key=lambda run: run.started_at)
    before = {r.cell.id: r for r in store.results(host_run.id)}
    after = {r.cell.id: r for r in store.results(docker_run.id)}
    assert set(before) == set(after) and len(after) == 4
    for item, result in after.items():
        assert result.accuracy is not None and before[item].accuracy is not None
        assert result.accuracy.passed, item
        assert result.accuracy.top1 == before[item].accuracy.top1, item
        checks = {c.name: c.passed for c in result.accuracy.checks}
        assert checks == {c.name: c.passed for c in before[item].accuracy.checks}, item
        assert result.framework_version == before[item].framework_version
        container = result.predictor.details["container"]  # type: ignore[union-attr]
        assert container["image"] == containers.default_image(result.cell.framework)
        assert container["image_id"].startswith("sha256:")
        assert "container" not in before[item].predictor.details  # type: ignore[union-attr]
        assert result.verdict is not None and result.verdict["kind"] == "incomparable"
        assert "container image" in result.verdict["reason"]
    digits = after["digits_cnn[onnxruntime-cpu-bs1-single_stream]"].accuracy
    assert digits is not None and digits.top1 is not None and digits.top1 > 0.97
    recorded = store.get_run(docker_run.id).host["containers"]
    assert set(recorded) == set(images)
    store.close()


def _session(tmp_path: Path, **settings: object) -> MlscopeSession:
    _readable(tmp_path, os.environ["MLSCOPE_CACHE"])
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    copy_manifest("digits_cnn", manifests)
    return MlscopeSession(
        Settings(rootdir=tmp_path, manifest_paths=[manifests], runtime="docker", **settings)  # type: ignore[arg-type]
    )


def test_a_container_has_no_network_cannot_write_the_models_and_is_not_root(
    tmp_path: Path, images: list[str]
) -> None:
    session = _session(tmp_path)
    manifest = session.manifest("digits_cnn")
    cell = Cell(model="digits_cnn", framework="onnxruntime")
    try:
        result = session.evaluate(manifest, cell, min_count=3, min_duration_s=0.0, warmup=1)
        assert result.accuracy.passed
        runtime = session.runtime(cell)
        artifact = Path(session._artifact(manifest, "onnxruntime").path)
        assert artifact.is_relative_to(session.settings.artifact_dir)

        probe = textwrap.dedent(
            """
            import errno, json, os, socket, sys
            found = {"uid": os.getuid()}
            try:
                socket.create_connection(("1.1.1.1", 443), timeout=5)
                found["network"] = "connected"
            except OSError as exc:
                found["network"] = errno.errorcode.get(exc.errno, str(exc))
            found["interfaces"] = sorted(name for _, name in socket.if_nameindex())
            targets = {"model": sys.argv[1], "model_dir": sys.argv[2] + "/probe",
                       "project": sys.argv[3] + "/probe", "work": sys.argv[4] + "/probe"}
            mounts = [line.split() for line in open("/proc/self/mounts")]
            for key, path in targets.items():
                mount = max((m for m in mounts if path.startswith(m[1].rstrip("/") + "/")),
                            key=lambda m: len(m[1]))
                found[key + "_mount"] = mount[3].split(",")[0]
                try:
                    with open(path, "ab") as handle:
                        handle.write(b"")
                    found[key] = "written"
                except OSError as exc:
                    found[key] = errno.errorcode.get(exc.errno, str(exc))
            print(json.dumps(found))
            """
        )
        inside = runtime.paths.to_container  # type: ignore[attr-defined]
        code, output = runtime.run_command(  # type: ignore[attr-defined]
            [
                "python", "-c", probe, inside(artifact), inside(artifact.parent),
                inside(session.settings.rootdir), inside(session.work_dir),
            ]
        )  # fmt: skip
        assert code == 0, output
        found = json.loads(output.strip().splitlines()[-1])
        assert found["network"] == "ENETUNREACH", found  # no route at all, not a DNS failure
        assert found["interfaces"] == ["lo"], found
        # Mounted read-only (and root's files, besides): no write gets through either way.
        for key in ("model", "model_dir", "project"):
            assert found[f"{key}_mount"] == "ro", found
            assert found[key] in ("EROFS", "EACCES"), found
        assert found["work_mount"] == "rw", found
        assert found["work"] == "written", found  # the one writable place, so the probe works
        assert found["uid"] != 0
    finally:
        session.close()
    assert artifact.exists() and not (artifact.parent / "probe").exists()


def test_a_model_over_the_memory_limit_fails_its_item_naming_the_oom_kill(
    tmp_path: Path, images: list[str]
) -> None:
    from pytest_mlscope.errors import EvaluationFailed, WorkerCrashed

    _readable(tmp_path, os.environ["MLSCOPE_CACHE"])
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    shutil.copy(MANIFESTS / "alexnet.yaml", manifests)
    shutil.copytree(MANIFESTS / "goldens", manifests / "goldens")
    session = MlscopeSession(
        Settings(
            rootdir=tmp_path, manifest_paths=[manifests], runtime="docker", docker_memory="150m"
        )
    )
    try:  # AlexNet's weights alone are 233 MB
        with pytest.raises((WorkerCrashed, EvaluationFailed)) as excinfo:
            session.evaluate(
                session.manifest("alexnet"),
                Cell(model="alexnet", framework="torch"),
                min_count=3,
                min_duration_s=0.0,
            )
    finally:
        session.close()
    assert "killed for exceeding its memory limit of 150m (OOM)" in str(excinfo.value)


def test_a_killed_container_fails_only_its_item_and_the_next_gets_a_fresh_one(
    pytester: pytest.Pytester, images: list[str]
) -> None:
    _project(pytester, "digits_cnn")
    # Items measure for 20 s; 8 s into the first one, this conftest kills its container.
    pytester.makeconftest(
        """
        import os, socket, threading, time
        import docker

        KILLED = []

        def pytest_runtest_setup(item):
            if KILLED or "bs1-single_stream" not in item.name:
                return
            KILLED.append(item.name)
            owner = f"{socket.gethostname()}:{os.getpid()}"

            def kill():
                client = docker.from_env()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    found = [  # the item's own container, not the agreement reference's
                        c
                        for c in client.containers.list(
                            filters={"label": f"org.mlscope.owner={owner}"}
                        )
                        if any("onnxruntime" in tag for tag in c.image.tags)
                    ]
                    if found:
                        time.sleep(8)
                        found[0].kill()
                        with open("killed.txt", "w") as handle:
                            handle.write(found[0].id)
                        return
                    time.sleep(0.2)

            threading.Thread(target=kill, daemon=True).start()
        """
    )
    result = pytester.runpytest_subprocess(
        "--mlscope", "-p", "no:cacheprovider", "--mlscope-runtime", "docker", "-v",
        "-k", "onnxruntime and single_stream", "--mlscope-warmup", "1", "--mlscope-min-count", "5",
        "--mlscope-min-duration", "20", "--mlscope-max-duration", "20", "-o",
        "mlscope_timeout=120",
    )  # fmt: skip
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*digits_cnn?onnxruntime-cpu-bs1-single_stream? FAILED*",
            "*digits_cnn?onnxruntime-cpu-bs8-single_stream? PASSED*",
        ]
    )
    result.stdout.fnmatch_lines(["*WorkerCrashed: worker in container * died during *SIGKILL*"])
    killed = (pytester.path / "killed.txt").read_text()
    store = _store(pytester)
    (run,) = store.runs()
    outcomes = {r.cell.id: r for r in store.results(run.id)}
    assert outcomes["digits_cnn[onnxruntime-cpu-bs1-single_stream]"].outcome == "failed"
    second = outcomes["digits_cnn[onnxruntime-cpu-bs8-single_stream]"]
    assert second.outcome == "passed"
    fresh = second.predictor.details["container"]["container"]  # type: ignore[union-attr]
    assert fresh and not killed.startswith(fresh)
    store.close()


def test_ctrl_c_removes_the_container_and_a_left_over_one_is_reaped(
    tmp_path: Path, images: list[str], docker_client: object
) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    from pytest_mlscope.runtimes.docker import OWNER_LABEL

    # A container left by a pytest that was killed outright (its pid is gone).
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    left = docker_client.containers.create(  # type: ignore[attr-defined]
        ORT_IMAGE, labels={OWNER_LABEL: f"{socket.gethostname()}:{gone.stdout.strip()}"}
    )
    project = tmp_path / "project"
    project.mkdir()
    _readable(tmp_path, project, os.environ["MLSCOPE_CACHE"])
    (project / "manifests").mkdir()
    copy_manifest("digits_cnn", project / "manifests")
    (project / "pytest.ini").write_text("[pytest]\nmlscope_manifests = manifests\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--mlscope", "-p", "no:cacheprovider",
         "--mlscope-runtime", "docker", "-k", "onnxruntime and bs1 and single_stream",
         "--mlscope-min-duration", "60", "--mlscope-max-duration", "60"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    owner = {"label": f"{OWNER_LABEL}={socket.gethostname()}:{process.pid}"}
    try:
        deadline = time.monotonic() + 90
        while not docker_client.containers.list(filters=owner):  # type: ignore[attr-defined]
            assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no container started"
            time.sleep(0.2)
        time.sleep(3)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert "KeyboardInterrupt" in output, output
    assert docker_client.containers.list(all=True, filters=owner) == []  # type: ignore[attr-defined]
    import docker

    with pytest.raises(docker.errors.NotFound):
        left.reload()


def test_no_daemon_skips_with_the_reason_and_fails_under_ci(pytester: pytest.Pytester) -> None:
    """Needs no daemon: DOCKER_HOST points at nothing."""
    _project(pytester, "digits_cnn")
    pytester._monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/no-docker.sock")
    pytester._monkeypatch.delenv("CI", raising=False)
    laptop = _run(pytester, "--mlscope-runtime", "docker", "-k", "onnxruntime", "-rs")
    laptop.assert_outcomes(skipped=3)
    laptop.stdout.fnmatch_lines(["*SKIPPED*docker runtime: no Docker daemon answers at unix://*"])
    pytester._monkeypatch.setenv("CI", "true")
    ci = _run(pytester, "--mlscope-runtime", "docker", "-k", "onnxruntime")
    ci.assert_outcomes(failed=3)
    ci.stdout.fnmatch_lines(["*no Docker daemon answers*CI=true: fails instead of skipping*"])


def test_a_missing_image_names_the_build_command(tmp_path: Path, docker_client: object) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    text = (MANIFESTS / "digits_cnn.yaml").read_text()
    text = text.replace(
        "  - name: onnxruntime\n",
        "  - name: onnxruntime\n    container: {amd64: {cpu: mlscope/onnxruntime:no-such-tag}, "
        "arm64: {cpu: mlscope/onnxruntime:no-such-tag}}\n",
    )
    (manifests / "digits_cnn.yaml").write_text(text)
    session = MlscopeSession(
        Settings(rootdir=tmp_path, manifest_paths=[manifests], runtime="docker")
    )
    manifest = session.manifest("digits_cnn")
    cell = Cell(model="digits_cnn", framework="onnxruntime")
    assert session.image(cell) == "mlscope/onnxruntime:no-such-tag"
    reason, service = session.skip_reason(manifest, cell)
    assert service
    assert reason == (
        "docker runtime: no image mlscope/onnxruntime:no-such-tag here; build it with "
        "`mlscope containers build onnxruntime`"
    )


def test_an_image_with_another_worker_is_refused_with_the_rebuild_command(
    tmp_path: Path, images: list[str], docker_client: object
) -> None:
    """A worker from other sources might speak another protocol or measure otherwise."""
    import io

    stale = "mlscope-test/stale-worker:cpu"
    dockerfile = f"FROM {ORT_IMAGE}\nLABEL org.mlscope.source-hash=0123456789abcdef\n"
    docker_client.images.build(  # type: ignore[attr-defined]
        fileobj=io.BytesIO(dockerfile.encode()), tag=stale, rm=True, network_mode="none"
    )
    try:
        manifests = tmp_path / "manifests"
        manifests.mkdir()
        text = (MANIFESTS / "digits_cnn.yaml").read_text()
        text = text.replace(
            "  - name: onnxruntime\n",
            f"  - name: onnxruntime\n    container: {{amd64: {{cpu: {stale}}}, "
            f"arm64: {{cpu: {stale}}}}}\n",
        )
        (manifests / "digits_cnn.yaml").write_text(text)
        session = MlscopeSession(
            Settings(rootdir=tmp_path, manifest_paths=[manifests], runtime="docker")
        )
        cell = Cell(model="digits_cnn", framework="onnxruntime")
        reason, service = session.skip_reason(session.manifest("digits_cnn"), cell)
        assert service and reason is not None
        assert reason.startswith(
            f"image {stale} holds a pytest-mlscope worker built from other sources than this one"
        )
        assert reason.endswith("rebuild it with `mlscope containers build onnxruntime`")
        # The image this checkout's CI built passes the same check.
        fresh = Cell(model="digits_cnn", framework="torch")
        assert session.skip_reason(session.manifest("digits_cnn"), fresh) == (None, False)
    finally:
        docker_client.images.remove(stale)  # type: ignore[attr-defined]


# -- images --------------------------------------------------------------------------------------


def test_requirements_pin_what_the_host_runs_and_leave_out_host_only_packages() -> None:
    requirements, version = containers.worker_requirements("onnxruntime")
    names = {line.split("==")[0].lower() for line in requirements}
    assert "pytest" not in names and "sqlalchemy" not in names
    assert {"numpy", "pydantic", "onnxruntime", "scikit-learn"} <= names
    assert all("==" in line for line in requirements), requirements
    import onnxruntime

    assert version == onnxruntime.__version__
    assert f"onnxruntime=={version}" in requirements
    other, older = containers.worker_requirements("onnxruntime", framework_version="1.20.1")
    assert older == "1.20.1" and "onnxruntime==1.20.1" in other
    gpu, _ = containers.worker_requirements("onnxruntime", device="gpu")
    assert any(line.startswith("onnxruntime-gpu==") for line in gpu)
    # The extra's environment markers pick the distribution: tensorflow-cpu on Linux x86_64.
    tensorflow, _ = containers.worker_requirements("tensorflow", framework_version="2.20.0")
    import platform

    name = "tensorflow-cpu" if platform.machine() == "x86_64" else "tensorflow"
    assert f"{name}==2.20.0" in tensorflow
    assert not any(line.lower().startswith(("jinja2", "matplotlib")) for line in tensorflow)
    with pytest.raises(containers.ContainerError, match="no extra 'nosuch'"):
        containers.worker_requirements("nosuch", framework_version="1.0")


def test_the_image_tag_hashes_what_goes_into_the_image(tmp_path: Path) -> None:
    folder = tmp_path / "containers"
    folder.mkdir()
    first = containers.plan("torch", folder, base_image="mlscope/base:bookworm")
    again = containers.plan("torch", folder, base_image="mlscope/base:bookworm")
    assert first.digest == again.digest and len(first.digest) == 64
    # A tag may not carry '+': torch's local version is spelled with '_'.
    assert first.tag.startswith("mlscope/torch:") and "+" not in first.tag
    assert first.tag.endswith(f"-cpu-{first.digest[:12]}")
    other_base = containers.plan("torch", folder, base_image="python:3.11-slim")
    assert other_base.digest != first.digest
    # One bundled Dockerfile builds every stack: the stack is in the hash.
    ort = containers.plan("onnxruntime", folder, base_image="mlscope/base:bookworm")
    assert ort.dockerfile == first.dockerfile and ort.digest != first.digest
    (folder / "torch").mkdir()
    dockerfile = folder / "torch" / "Dockerfile"
    dockerfile.write_text(first.dockerfile.read_text() + "\n# a change\n")
    assert containers.plan("torch", folder, base_image="mlscope/base:bookworm").digest != (
        first.digest
    )
    known = r"no stack 'nosuch' \(stacks with a Dockerfile: .*onnxruntime"
    with pytest.raises(containers.ContainerError, match=known):
        containers.plan("nosuch", folder)
    with pytest.raises(containers.ContainerError, match="pass --base"):
        containers.plan("onnxruntime", folder, device="gpu")


def test_the_recipes_ship_in_the_wheel_and_a_project_adds_to_or_replaces_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user with only the wheel builds the bundled stacks' images and bases from the recipes
    inside it; a project's own containers/<stack>/ replaces a bundled stack or adds one."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("pytest_mlscope-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        str(path.relative_to(REPO)) for path in containers.RECIPES.rglob("*") if path.is_file()
    }
    assert {"Dockerfile", "base/build.sh", "caffe/base.sh"} <= {
        name.removeprefix("pytest_mlscope/containers/recipes/") for name in shipped
    }
    assert shipped <= names
    # No project recipes: the bundled ones, wherever the user stands.
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    monkeypatch.chdir(project / "sub")
    assert containers.recipe_folders() == [containers.RECIPES]
    assert containers.stacks() == ["caffe", "onnxruntime", "tensorflow", "torch"]
    bundled = containers.plan("onnxruntime", base_image="mlscope/base:bookworm")
    assert bundled.dockerfile == containers.RECIPES / "Dockerfile"
    # The project's containers/ above the working folder: its onnxruntime and its own stack.
    own = project / "containers"
    (own / "onnxruntime").mkdir(parents=True)
    text = (containers.RECIPES / "Dockerfile").read_text()
    (own / "onnxruntime" / "Dockerfile").write_text(text + "RUN echo the team's own layer\n")
    (own / "mystack").mkdir()
    (own / "mystack" / "Dockerfile").write_text("FROM scratch\n")
    assert containers.recipe_folders() == [own, containers.RECIPES]
    assert containers.stacks() == ["caffe", "mystack", "onnxruntime", "tensorflow", "torch"]
    replaced = containers.plan("onnxruntime", base_image="mlscope/base:bookworm")
    assert replaced.dockerfile == own / "onnxruntime" / "Dockerfile"
    assert replaced.digest != bundled.digest
    # The project's onnxruntime replaces the bundled one whole: no GPU file of its own, none at all
    # (never the bundled one beside the project's CPU file), and the error names where.
    assert containers.recipe("onnxruntime", "Dockerfile.gpu") is None
    with pytest.raises(containers.ContainerError, match=f"no {own}/onnxruntime/Dockerfile.gpu"):
        containers.plan("onnxruntime", device="gpu", base_image="nvidia/cuda")
    assert containers.recipe("torch", "Dockerfile.gpu") == containers.RECIPES / "Dockerfile"
    # The bundled recipe builds Caffe for CPUs only, and says so.
    assert containers.recipe("caffe", "Dockerfile.gpu") is None
    with pytest.raises(containers.ContainerError, match="builds caffe for cpu only"):
        containers.plan("caffe", device="gpu", base_image="nvidia/cuda")
    with pytest.raises(containers.ContainerError, match=r"--dir .*nowhere: no such folder"):
        containers.stacks(tmp_path / "nowhere")
    # A project whose containers/ holds only its own base builder is found too.
    shutil.rmtree(own)
    (own / "base").mkdir(parents=True)
    (own / "base" / "build.sh").write_text("echo the team's base\n")
    assert containers.base_recipe() == (own / "base" / "build.sh", "mlscope/base:bookworm")
    assert containers.base_recipe("caffe") == (
        containers.RECIPES / "caffe" / "base.sh",
        "mlscope/base:bullseye-caffe",
    )
    with pytest.raises(containers.ContainerError, match="only caffe has one of its own"):
        containers.base_recipe("torch")


def test_an_unchanged_image_is_not_rebuilt(images: list[str], docker_client: object) -> None:
    """The image CI built from this checkout has this checkout's content hash: building again
    is a lookup, not a build."""
    base = containers.find_image(docker_client, ORT_IMAGE).labels[  # type: ignore[union-attr]
        f"{containers.LABEL}.base-image"
    ]
    made = containers.plan("onnxruntime", base_image=base, docker=docker_client)
    if containers.find_image(docker_client, made.tag) is None:
        requires_ci(f"{ORT_IMAGE} was built from other sources than this checkout's")
    built = containers.build(made, docker_client)
    assert not built.rebuilt
    assert built.image_id == containers.find_image(docker_client, ORT_IMAGE).id  # type: ignore[union-attr]


def test_cli_lists_the_images(images: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_mlscope.cli import main

    assert main(["containers", "list"]) == 0
    out = capsys.readouterr().out
    assert "mlscope/onnxruntime:cpu" in out and "mlscope/torch:cpu" in out
    assert os.linesep.join(out.splitlines()[:1]).split()[:3] == ["tags", "stack", "version"]


OTHER_ORT = "1.31.1"  # the second ONNX Runtime release .ci/run builds an image of


def _other_release_image(docker_client: object) -> str:
    """The image of ONNX Runtime OTHER_ORT that .ci/run builds; skips (fails under CI) without."""
    image = f"mlscope/onnxruntime:{OTHER_ORT}-cpu"
    if containers.find_image(docker_client, image) is None:
        requires_ci(
            f"no image {image}: mlscope containers build onnxruntime --framework-version "
            f"{OTHER_ORT} --base mlscope/base:bookworm"
        )
    return image


def test_two_onnxruntime_releases_in_two_images_are_interleaved(
    pytester: pytest.Pytester, images: list[str], docker_client: object
) -> None:
    """ORT 1.32 (the host's, default image) timed against ORT 1.31 (its own image), round by
    round, each in its own container."""
    other_image = _other_release_image(docker_client)
    path = _project(pytester, "digits_cnn") / "digits_cnn.yaml"
    entry = '  - name: onnxruntime\n    version: ">=1.17"\n'
    path.write_text(
        path.read_text().replace(
            entry,
            f"{entry}    interleave_with: ort131\n"
            "  - name: onnxruntime\n    stack: ort131\n"
            f"    container: {{amd64: {{cpu: {other_image}}}, arm64: {{cpu: {other_image}}}}}\n",
        )
    )
    result = _run(
        pytester, "--mlscope-runtime", "docker", "--mlscope-interleave", "-k",
        "onnxruntime and bs1 and single_stream", "--mlscope-threshold", "3", "-v",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*digits_cnn?onnxruntime@ort131-cpu-bs1-single_stream? PASSED*"])
    store = _store(pytester)
    found = store.latest_results(store.runs(limit=1)[0].id)
    store.close()
    main = found["digits_cnn[onnxruntime-cpu-bs1-single_stream]"]
    other = found["digits_cnn[onnxruntime@ort131-cpu-bs1-single_stream]"]
    assert main.framework_version != OTHER_ORT and other.framework_version == OTHER_ORT
    assert other.predictor.details["container"]["image"] == other_image  # type: ignore[union-attr]
    assert main.verdict is not None and main.verdict["design"] == "interleaved"
    assert main.verdict["pairs"] >= 30
    assert (
        f"interleaved with stack ort131 (onnxruntime {OTHER_ORT} in {other_image}; "
        in main.verdict["reason"]
    )
    assert 0.33 < main.verdict["ratio"] < 3  # the same model on two releases, on one machine
    assert main.accuracy is not None and main.accuracy.passed
    assert len(main.rounds) == main.verdict["pairs"]


def test_a_baseline_saved_in_another_image_is_timed_in_that_image_beside_the_new_one(
    pytester: pytest.Pytester, images: list[str], docker_client: object
) -> None:
    """A new image (here: ONNX Runtime upgraded inside it) A/B-tested by naming the baseline:
    the baseline's side runs in the image the baseline ran in, if the daemon still has it, and
    the verdict names it; without that image, the stored design says how to get it back."""
    import sqlite3

    other_image = _other_release_image(docker_client)
    path = _project(pytester, "digits_cnn") / "digits_cnn.yaml"
    original = path.read_text()
    entry = '  - name: onnxruntime\n    version: ">=1.17"\n'
    path.write_text(
        original.replace(
            entry,
            f"{entry}    container: {{amd64: {{cpu: {other_image}}}, "
            f"arm64: {{cpu: {other_image}}}}}\n",
        )
    )
    select = (
        "--mlscope-runtime=docker", "-k", "onnxruntime and bs1 and single_stream",
        "--mlscope-threshold=3",
    )  # fmt: skip
    _run(pytester, *select, "--mlscope-save-baseline=main").assert_outcomes(passed=1)
    path.write_text(original)  # the team's new image: the stack's default, another release

    _run(pytester, *select, "--mlscope-baseline=main").assert_outcomes(passed=1)
    store = _store(pytester)
    record = store.latest_results(store.runs(limit=1)[0].id)[
        "digits_cnn[onnxruntime-cpu-bs1-single_stream]"
    ]
    store.close()
    assert record.framework_version != OTHER_ORT
    assert record.verdict is not None and record.verdict["design"] == "interleaved", record.verdict
    reason = record.verdict["reason"]
    assert f"in the baseline's image {other_image} (" in reason, reason
    assert f"A on {OTHER_ORT}, B on {record.framework_version}" in reason, reason
    assert record.paired_predictor is not None and record.paired_predictor.version == OTHER_ORT
    assert len(record.paired_rounds) == len(record.rounds) == record.verdict["pairs"] >= 30

    # The baseline's image is gone from this daemon: the stored design, and how to get it back.
    with sqlite3.connect(pytester.path / ".mlscope" / "results.db") as connection:
        connection.execute(
            "UPDATE results SET predictor = json_set(predictor, '$.details.container.image', "
            "'mlscope/onnxruntime:gone-cpu', '$.details.container.image_id', ?) "
            "WHERE run_id = (SELECT run_id FROM baselines WHERE name = 'main')",
            ("sha256:" + "0" * 64,),
        )
    _run(pytester, *select, "--mlscope-baseline=main").assert_outcomes(passed=1)
    store = _store(pytester)
    record = store.latest_results(store.runs(limit=1)[0].id)[
        "digits_cnn[onnxruntime-cpu-bs1-single_stream]"
    ]
    store.close()
    # the stored design: another image is another environment, named, never a false alarm
    assert record.verdict is not None and record.verdict["kind"] == "incomparable", record.verdict
    assert not record.paired_rounds
    assert (
        "the baseline ran in mlscope/onnxruntime:gone-cpu (000000000000), which this Docker "
        "daemon does not have; build it (`mlscope containers build onnxruntime "
        f"--framework-version {OTHER_ORT}`)"
    ) in record.verdict["reason"], record.verdict["reason"]


def test_prune_removes_only_builds_no_moving_tag_points_at(
    images: list[str], docker_client: object, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from pytest_mlscope.cli import main

    def build(digest: str, *tags: str) -> object:
        dockerfile = (
            f"FROM {ORT_IMAGE}\nLABEL org.mlscope.stack=prunetest "
            f"org.mlscope.content-hash={digest}\n"
        )
        image, _ = docker_client.images.build(  # type: ignore[attr-defined]
            fileobj=io.BytesIO(dockerfile.encode()), tag=tags[0], rm=True, network_mode="none"
        )
        for tag in tags[1:]:
            repository, _, name = tag.rpartition(":")
            image.tag(repository, name)
        return image

    old = build("a" * 64, f"mlscope/prunetest:1.0-cpu-{'a' * 12}")
    new = build("b" * 64, f"mlscope/prunetest:1.0-cpu-{'b' * 12}", "mlscope/prunetest:cpu")
    try:
        found = containers.superseded(docker_client, ["prunetest"])
        assert [image.id for image in found] == [old.id]  # type: ignore[attr-defined]
        assert main(["containers", "prune", "prunetest", "--dry-run"]) == 0
        assert f"would remove mlscope/prunetest:1.0-cpu-{'a' * 12}" in capsys.readouterr().out
        assert containers.find_image(docker_client, f"mlscope/prunetest:1.0-cpu-{'a' * 12}")
        assert main(["containers", "prune", "prunetest"]) == 0
        assert f"removed mlscope/prunetest:1.0-cpu-{'a' * 12}" in capsys.readouterr().out
        assert containers.find_image(docker_client, f"mlscope/prunetest:1.0-cpu-{'a' * 12}") is None
        assert containers.find_image(docker_client, "mlscope/prunetest:cpu") is not None
        assert containers.find_image(docker_client, ORT_IMAGE) is not None  # other stacks: kept
    finally:
        for image in (old, new):
            with contextlib.suppress(Exception):
                docker_client.images.remove(image.id, force=True)  # type: ignore[attr-defined]
