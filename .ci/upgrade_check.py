"""Which upgrade would break the suite? Run by hand (or on a schedule) before raising pins.

    python .ci/upgrade_check.py                      # the whole suite
    python .ci/upgrade_check.py -- tests/reliability # or part of it (pytest arguments after --)

1. Installs the newest versions pyproject.toml's ranges allow (torch stays at .ci/lock-inputs.txt's
   pin) into a scratch virtual environment and lists every package newer than constraints.txt.
2. Runs the suite there (services as in CI: .ci/services.sh).
3. If tests fail, replays only the failed tests in a second scratch environment built from
   constraints.txt, upgrading one package at a time, and names each upgrade that makes them fail.
4. Lists the upper bounds in pyproject.toml that hold back a newer release.

Exit status: 0 when the newest allowed versions pass, 1 when something breaks (the report says
what), 2 when the environments cannot be built. Nothing in the repository is changed: raise a pin
with `bash .ci/lock.sh --upgrade-package NAME` once its breakage is fixed or bounded.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ".[dev,postgres]"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", re.MULTILINE)
FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """`name==version` lines of a constraints file or `pip freeze`, local labels dropped."""
    return {canonical(n): v.split("+")[0] for n, v in PIN.findall(text)}


def sh(cmd: list[str] | str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    shell = isinstance(cmd, str)
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        cmd, cwd=ROOT, text=True, shell=shell, executable="/bin/bash" if shell else None, **kwargs
    )


def make_venv(where: Path, *pip_args: str) -> Path:
    sh([sys.executable, "-m", "venv", str(where)], check=True)
    python = where / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = sh([*install, *pip_args, "-e", EXTRAS], capture_output=True)
    if result.returncode:
        sys.exit(f"cannot build {where.name}: pip said\n{result.stderr[-3000:]}")
    return python


def freeze(python: Path) -> dict[str, str]:
    out = sh([str(python), "-m", "pip", "freeze", "--exclude-editable"], capture_output=True)
    return pins(out.stdout)


def run_tests(python: Path, pytest_args: list[str]) -> tuple[int, list[str], str]:
    """The suite in `python`'s environment with CI's services; (exit code, failed ids, tail)."""
    args = " ".join(pytest_args)
    pytest = f"{python} -m pytest -q -rfE -p no:cacheprovider {args}"
    cmd = f"source .ci/services.sh >/dev/null && {pytest}"
    result = sh(cmd, capture_output=True)
    output = result.stdout + result.stderr
    return result.returncode, sorted(set(FAILED.findall(output))), output[-2000:]


def upper_bounds() -> list[tuple[str, str]]:
    """(package, requirement) for every requirement of pyproject.toml with an upper bound."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    bounded = [r for r in requirements if "<" in r]
    return [(canonical(re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0]), r) for r in bounded]


def newest_release(python: Path, package: str) -> str | None:
    out = sh([str(python), "-m", "pip", "index", "versions", package], capture_output=True)
    match = re.search(r"\((\S+)\)", out.stdout)
    return match.group(1) if match else None


def culprits(
    upgrades: dict[str, tuple[str, str]], failed: list[str], scratch: Path
) -> dict[str, list[str]]:
    """For each upgraded package alone on top of the lock: which of `failed` it makes fail."""
    lock_text = (ROOT / "constraints.txt").read_text()
    python = make_venv(scratch / "locked", "-c", "constraints.txt")
    found: dict[str, list[str]] = {}
    for package, (locked, newest) in sorted(upgrades.items()):
        print(f"  replaying {len(failed)} failed test(s) with only {package} {locked} -> {newest}")
        others = "\n".join(
            line
            for line in lock_text.splitlines()
            if not (m := PIN.match(line)) or canonical(m.group(1)) != package
        )
        trial = scratch / f"{package}.txt"
        trial.write_text(f"{others}\n{package}=={newest}\n")
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        if sh([*pip, "-c", str(trial), "-e", EXTRAS], capture_output=True).returncode:
            found[package] = ["(cannot be installed beside the other pins)"]
            continue
        code, still_failing, _ = run_tests(python, failed)
        if code:
            found[package] = still_failing or ["(the replay failed before collecting tests)"]
        sh([*pip, "-c", "constraints.txt", "-e", EXTRAS], capture_output=True)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hpo-upgrade-check.") as tmp:
        scratch = Path(tmp)
        print("Installing the newest versions the ranges allow ...")
        newest_python = make_venv(
            scratch / "newest", "--upgrade", "--upgrade-strategy", "eager",
            "-c", ".ci/lock-inputs.txt",
        )  # fmt: skip
        locked = pins((ROOT / "constraints.txt").read_text())
        newest = freeze(newest_python)
        upgrades = {
            name: (locked[name], version)
            for name, version in newest.items()
            if name in locked and version != locked[name]
        }
        print(f"{len(upgrades)} package(s) newer than constraints.txt:")
        for name, (old, new) in sorted(upgrades.items()):
            print(f"  {name:30} {old:>12} -> {new}")

        print("Running the suite on the newest versions ...")
        code, failed, tail = run_tests(newest_python, args.pytest_args)
        broken: dict[str, list[str]] = {}
        if code and not failed:
            print(f"pytest exited {code} without naming a failed test; its output ended:\n{tail}")
        elif code:
            print(f"{len(failed)} test(s) fail on the newest versions:")
            print("".join(f"  {test}\n" for test in failed), end="")
            broken = culprits(upgrades, failed, scratch)
        else:
            print("The suite passes on the newest versions: `bash .ci/lock.sh --upgrade` is safe.")

        for package, tests in broken.items():
            old, new = upgrades[package]
            print(f"BREAKS: {package} {old} -> {new}:")
            print("".join(f"  {test}\n" for test in tests), end="")
        if code and failed and not broken:
            print("No single upgrade explains the failures: they need several together.")

        for package, requirement in upper_bounds():
            release = newest_release(newest_python, package)
            if release and release != newest.get(package):
                print(f"HELD BACK: {requirement} excludes the newest release {release}")
    return 1 if code else 0


if __name__ == "__main__":
    sys.exit(main())
