#!/usr/bin/env bash
# CI: the Pythons beside the default python3 (3.11, which the README's test command covers):
# Python 3.12 and 3.13, found under ~/.pyenv/versions (3.12.*, 3.13.*; the newest patch release).
# For each: a venv of its own (.venv-3.12, .venv-3.13), the unit tier, a short set of process
# tests (the whole loop, a gate, kill -9 during a dispatch and at a gate, the Python + SQLite
# check), then the zipapp built with that Python (dist/iwo-lite-py3.12.pyz) and smoke-tested
# (build/ci-smoke.sh). Both Pythons run at once. Under CI=true a missing Python fails.
#
#   bash .ci/pythons.sh                  # both, every step
#   bash .ci/pythons.sh 3.13             # one
#   bash .ci/pythons.sh prepare [3.13]   # only the venvs and the zipapps (nothing timed: .ci/run runs
#                                        #   this niced beside the 3.11 tests, on the CPU they leave)
#   bash .ci/pythons.sh check [3.13]     # only the tests and the smoke test of the zipapps prepared
set -euo pipefail
cd "$(dirname "$0")/.."
versions=${PYENV_ROOT:-$HOME/.pyenv}/versions
steps=all
case "${1:-}" in prepare|check) steps=$1; shift ;; esac
minors=("$@")
[ ${#minors[@]} -gt 0 ] || minors=(3.12 3.13)
tests=(
    tests/unit
    tests/test_pythons.py
    tests/test_loop.py::test_spec_runs_all_six_roles_and_writes_one_handoff_per_dispatch
    tests/test_loop.py::test_blocker_gate_reject_ends_rejected
    tests/test_crash.py::test_kill_during_a_dispatch_reattaches_to_the_live_run
    tests/test_crash.py::test_kill_while_waiting_at_a_gate_keeps_the_gate_and_its_deadline
)

one() {  # one Python: venv and zipapp (prepare), then the tests and the zipapp's smoke test (check)
    local minor=$1 python=$2 venv=.venv-$1 pyz=$PWD/dist/iwo-lite-py$1.pyz
    if [ "$steps" != check ]; then
        [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
        "$venv/bin/pip" install -q -c requirements.lock -e '.[test]'
        PYTHON=$python bash build/shiv.sh "$pyz"
    fi
    if [ "$steps" != prepare ]; then
        "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
        PYTHON=$python IWO_PYZ=$pyz IWO_SMOKE_BUILD=no bash build/ci-smoke.sh
    fi
}

logs=$(mktemp -d "${TMPDIR:-/tmp}/iwo-lite-pythons.XXXXXX")
trap 'rm -rf "$logs"' EXIT
pids=()
for minor in "${minors[@]}"; do
    python=$(ls -d "$versions/$minor".*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$python" ]; then
        echo "pythons.sh: no Python $minor under $versions ($minor.*)" >&2
        if [ "${CI:-}" = true ]; then exit 1; fi
        continue
    fi
    echo "pythons.sh: Python $minor: $python ($("$python" -c 'import sqlite3; print("SQLite", sqlite3.sqlite_version)'))"
    one "$minor" "$python" >"$logs/$minor.log" 2>&1 &
    pids+=("$!:$minor")
done
failed=0
label=""
[ "$steps" = all ] || label=" ($steps)"
for entry in "${pids[@]}"; do
    pid=${entry%%:*} minor=${entry#*:}
    if wait "$pid"; then status=passed; else status=FAILED; failed=1; fi
    echo "----- Python $minor${label}: $status -----"
    cat "$logs/$minor.log"
done
exit $failed
