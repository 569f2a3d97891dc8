#!/usr/bin/env bash
# Regenerate constraints.txt, the pinned set of every package the project, its dev tools and its
# PostgreSQL driver install, from pyproject.toml's ranges and .ci/lock-inputs.txt, with pip-tools
# (pip-compile) in a scratch virtual environment. Run it on CPython 3.11 (what CI and the images
# use), commit the result, and run .ci/run before pushing:
#   bash .ci/lock.sh                      # keep every pin that still satisfies the ranges
#   bash .ci/lock.sh --upgrade            # newest versions the ranges allow
#   bash .ci/lock.sh --upgrade-package X  # raise one package on purpose
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install --quiet --disable-pip-version-check 'pip-tools==7.6.2'

# CUSTOM_COMPILE_COMMAND is what the file's header says regenerates it.
CUSTOM_COMPILE_COMMAND="bash .ci/lock.sh" "$scratch/venv/bin/pip-compile" --quiet \
    --all-extras --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
    --constraint .ci/lock-inputs.txt --output-file constraints.txt "$@" pyproject.toml

# pip takes a local CPU wheel of torch here (version 2.13.0+cpu); users and images get PyPI's
# 2.13.0, so the pin names the release, not this machine's local build.
sed -i -E 's/^(torch==[0-9.]+)\+[A-Za-z0-9.]+/\1/' constraints.txt
grep -n '^torch==' constraints.txt
