#!/usr/bin/env bash
# Time the README's two set-up commands as a newcomer runs them: a fresh clone,
# a fresh venv made by the Python's own venv (with the pip it ships), and an
# empty pip cache.  Run by hand from the repository root:
#
#     bash benchmarks/time_setup.sh [PYTHON]          # default python3
#
# It prints the wall time of: the demo command, the test install, the test
# suite.  The system packages the tests need (README) must be installed.
set -euo pipefail
python=${1:-python3}
repo=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_NO_CACHE_DIR=1

git clone -q "$repo" "$work/clone"
cd "$work/clone"
"$python" -m venv "$work/demo-venv"
"$python" -m venv "$work/test-venv"
echo "python: $("$python" --version); venv pip: $("$work/demo-venv/bin/pip" --version | cut -d' ' -f1-2)"

seconds() { local t0=$SECONDS; "$@" >"$work/log" 2>&1 || { tail -20 "$work/log"; exit 1; }; echo $((SECONDS - t0)); }

# 1. the demo command
demo=$(seconds bash -c "source '$work/demo-venv/bin/activate' && pip install . && zooprep demo '$work/demo'")
echo "demo command (install + demo): ${demo} s"

# 2. the test command, install part and test part timed apart
command=$(grep -m1 '^python -m pip install --upgrade pip && ' .ci/run)
install=${command% && python -m pytest}
inst=$(seconds bash -c "source '$work/test-venv/bin/activate' && $install")
echo "test install: ${inst} s"
tests=$(seconds bash -c "source '$work/test-venv/bin/activate' && python -m pytest -q -p no:cacheprovider")
tail -1 "$work/log"
echo "test suite: ${tests} s"
