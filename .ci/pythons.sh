#!/usr/bin/env bash
# CI: the Pythons beside the default python3 (3.11, which the README's test command covers):
# Python 3.12 and 3.13, found under ~/.pyenv/versions (3.12.*, 3.13.*; the newest patch release).
# For each: a venv of its own (.venv-3.12, .venv-3.13), the unit tier, a short set of process
# tests (the whole loop, a gate, kill -9 during a dispatch and at a gate, the Python + SQLite
# check), then the zipapp built with that Python and smoke-tested (build/ci-smoke.sh).
# Both Pythons run at once (the process tests mostly wait). Under CI=true a missing Python fails.
#
#   bash .ci/pythons.sh            # both
#   bash .ci/pythons.sh 3.13       # one
set -euo pipefail
cd "$(dirname "$0")/.."
versions=${PYENV_ROOT:-$HOME/.pyenv}/versions
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

one() {  # one Python: venv, tests, zipapp
    local minor=$1 python=$2 venv=.venv-$1
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/pip" install -q -c requirements.lock -e '.[test]'
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
    PYTHON=$python IWO_PYZ=$PWD/dist/iwo-lite-py$minor.pyz bash build/ci-smoke.sh
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
for entry in "${pids[@]}"; do
    pid=${entry%%:*} minor=${entry#*:}
    if wait "$pid"; then status=passed; else status=FAILED; failed=1; fi
    echo "----- Python $minor: $status -----"
    cat "$logs/$minor.log"
done
exit $failed
