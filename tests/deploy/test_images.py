"""docker/Dockerfile.*: the shell steps that choose what goes into the images, run here as the
build runs them (`/bin/sh -c`, with `pip` and an older `python` stood in for), without an image
engine: both images install at the versions of the pinned constraints.txt, the worker keeps
the base image's torch and pins what the base lacks, and a base with a Python older than 3.11
stops the build with one line that says so.

The images themselves are built by hand (podman, a Debian-made base): docs/deploy.md, "Images".
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCKER = ROOT / "docker"
PIP_STANDIN = """#!{python}
import os, shutil, sys
out = os.environ["PIP_RECORD"]
with open(os.path.join(out, "argv"), "w") as f:
    f.write("\\n".join(sys.argv[1:]))
args = sys.argv[1:]
for flag, name in (("-r", "requirements"), ("-c", "constraints")):
    if flag in args:
        shutil.copy(args[args.index(flag) + 1], os.path.join(out, name))
"""
OLD_PYTHON_STANDIN = """#!{python}
import sys
assert sys.argv[1] == "-c"
sys.version_info = (3, 10, 12, "final", 0)  # what a base image with Python 3.10 reports
exec(compile(sys.argv[2], "<string>", "exec"), {{"__name__": "__main__"}})
"""


def run_steps(dockerfile: str) -> list[str]:
    """The shell form of each RUN instruction, lines joined as the builder joins them."""
    text = (DOCKER / dockerfile).read_text()
    joined = re.sub(r"\\\n", "", text)
    return [line[4:] for line in joined.splitlines() if line.startswith("RUN ")]


def step(dockerfile: str, marker: str) -> str:
    [found] = [command for command in run_steps(dockerfile) if marker in command]
    return found


def stand_in(folder: Path, name: str, source: str) -> None:
    path = folder / name
    path.write_text(source.format(python=sys.executable))
    path.chmod(0o755)


def run(command: str, cwd: Path, bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"
    return subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PATH": path, **env},
    )


@pytest.mark.parametrize(
    ("dockerfile", "says"),
    [
        (
            "Dockerfile.worker",
            "error: the hpo worker image needs Python 3.11 or newer, but "
            "BASE=pytorch/pytorch:2.1.2-cuda11.8-cudnn8-runtime has Python 3.10; pick a newer "
            "base, e.g. pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime",
        ),
        (
            "Dockerfile.server",
            "error: the hpo images need Python 3.11 or newer; PYTHON_VERSION gives Python 3.10",
        ),
    ],
)
def test_a_base_with_python_older_than_3_11_stops_the_build_in_one_line(
    tmp_path: Path, dockerfile: str, says: str
) -> None:
    check = step(dockerfile, "sys.version_info >= (3, 11)")
    # The check comes before anything that needs 3.11 (tomllib).
    assert run_steps(dockerfile).index(check) < run_steps(dockerfile).index(
        step(dockerfile, "tomllib")
    )
    base = "pytorch/pytorch:2.1.2-cuda11.8-cudnn8-runtime"
    old = tmp_path / "old"
    old.mkdir()
    stand_in(old, "python", OLD_PYTHON_STANDIN)
    refused = run(check, tmp_path, old, BASE=base)
    assert refused.returncode == 1
    assert refused.stderr == says + "\n" and refused.stdout == ""
    # This machine's Python 3.11+ passes without a word.
    passed = run(check, tmp_path, tmp_path, BASE=base)
    assert (passed.returncode, passed.stdout, passed.stderr) == (0, "", "")


def _dependencies_step(dockerfile: str, tmp_path: Path, constraints: str) -> dict[str, str]:
    """Run the image's dependency step in `tmp_path` with a stand-in pip; what pip was given."""
    work, record, bin_dir = tmp_path / "src", tmp_path / "record", tmp_path / "bin"
    for folder in (work, record, bin_dir):
        folder.mkdir()
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (work / "constraints.txt").write_text(constraints)
    stand_in(bin_dir, "pip", PIP_STANDIN)
    command = step(dockerfile, "tomllib").replace("/tmp/", f"{tmp_path}/")
    server_without = re.search(
        r'^ARG SERVER_WITHOUT="([^"]+)"', (DOCKER / dockerfile).read_text(), re.M
    )
    env = {"PIP_RECORD": str(record)}
    if server_without:
        env["SERVER_WITHOUT"] = server_without.group(1)
    done = run(command, work, bin_dir, **env)
    assert done.returncode == 0, done.stderr
    return {p.name: p.read_text() for p in record.iterdir()}


def _names(lines: str) -> set[str]:
    """The distribution names of requirement lines, normalized as PEP 503 does."""
    return {
        re.sub(r"[-_.]+", "-", re.split(r"[<>=!~ ;\[]", line)[0]).lower()
        for line in lines.splitlines()
        if line.strip() and not line.startswith((" ", "#"))
    }


def test_the_server_image_installs_every_dependency_at_its_pinned_version(tmp_path: Path) -> None:
    given = _dependencies_step(
        "Dockerfile.server", tmp_path, (ROOT / "constraints.txt").read_text()
    )
    argv = given["argv"].splitlines()
    assert argv[:1] == ["install"] and "-c" in argv
    assert given["constraints"] == (ROOT / "constraints.txt").read_text()
    wanted = _names(given["requirements"])
    assert "psycopg[binary]>=3.1" in given["requirements"].splitlines()
    assert not wanted & {"torch", "scikit-learn", "mnist1d"}
    pinned = _names((ROOT / "constraints.txt").read_text())
    assert wanted <= pinned, wanted - pinned  # every requirement has its pin


def test_the_worker_pins_what_its_base_lacks_and_keeps_the_bases_torch(tmp_path: Path) -> None:
    # numpy and typing_extensions stand for what the base image already has (this venv has them,
    # as the PyTorch image does); the other name is in no environment.
    constraints = (
        "# pinned\nnumpy==0.0.1\n    # via optuna\nTyping_Extensions==0.0.1\n"
        "torch==0.0.1\nhpo-not-installed-anywhere==1.2.3\n"
    )
    given = _dependencies_step("Dockerfile.worker", tmp_path, constraints)
    assert given["constraints"].splitlines() == [
        "hpo-not-installed-anywhere==1.2.3",
        f"torch=={version('torch')}",
    ]
    assert "torch>=2.2" in given["requirements"].splitlines()


def test_the_images_copy_the_constraints_they_install_from() -> None:
    for dockerfile in ("Dockerfile.server", "Dockerfile.worker"):
        copies = [
            shlex.split(line)[1:-1]
            for line in (DOCKER / dockerfile).read_text().splitlines()
            if line.startswith("COPY ")
        ]
        assert ["pyproject.toml", "constraints.txt"] in copies, dockerfile


def test_the_images_copy_every_package_the_install_builds() -> None:
    """`pip install /src` builds the packages pyproject.toml lists: each one's top folder must
    be copied in (and be in the build context), or the image build fails."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        setuptools.get("package-dir", {}).get(package, package.replace(".", "/")).split("/")[0]
        for package in setuptools["packages"]
    }
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for dockerfile in ("Dockerfile.server", "Dockerfile.worker"):
        copied = {
            shlex.split(line)[1]
            for line in (DOCKER / dockerfile).read_text().splitlines()
            if line.startswith("COPY ")
        }
        assert folders <= copied, (dockerfile, folders - copied)
    assert all(f"!{folder}/" in ignore for folder in folders), folders
