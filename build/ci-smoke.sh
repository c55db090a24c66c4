#!/usr/bin/env bash
# CI: build the zipapp with build/shiv.sh, then smoke-test it from a directory outside the
# checkout, with HOME, SHIV_ROOT, TMPDIR and IWO_HOME in a scratch directory:
# `--version` (also through the shebang), `demo` (the whole loop, DBOS included), `status`
# of the demo's home (the spec is done) and of an empty home. Any failure exits non-zero.
# PYTHON=python3.12 builds and runs it with that Python (build/shiv.sh), into $IWO_PYZ (default
# dist/iwo-lite.pyz); the shebang (/usr/bin/env python3) is tried when python3 is of that version.
# IWO_SMOKE_BUILD=no tests $IWO_PYZ as it is, built beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python=${PYTHON:-python3}
pyz=${IWO_PYZ:-$repo/dist/iwo-lite.pyz}
minor() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }

if [ "${IWO_SMOKE_BUILD:-yes}" = no ]; then   # built beforehand (.ci/run, .ci/pythons.sh prepare)
    [ -f "$pyz" ] || { echo "ci-smoke: IWO_SMOKE_BUILD=no, but there is no $pyz" >&2; exit 1; }
else
    bash build/shiv.sh "$pyz"
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/iwo-lite-smoke.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
trap 'echo "ci-smoke: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
mkdir -p "$scratch/home" "$scratch/tmp" "$scratch/cwd"
cd "$scratch/cwd"
export HOME=$scratch/home SHIV_ROOT=$scratch/shiv TMPDIR=$scratch/tmp IWO_HOME=$scratch/iwo COLUMNS=200
unset PYTHONPATH

version=$("$python" "$pyz" --version)
echo "$version"
[[ $version == "iwo-lite "* ]]
if [[ $(minor "$python") == $(minor python3) ]]; then
    [[ $("$pyz" --version) == "$version" ]]             # the shebang (/usr/bin/env python3) works too
fi

"$python" "$pyz" demo
demo_home=$(ls -d "$TMPDIR"/iwo-lite-demo-*)
"$python" "$pyz" --home "$demo_home" status
"$python" "$pyz" --home "$demo_home" status demo-greet --json \
    | "$python" -c 'import json, sys; [spec] = json.load(sys.stdin); assert spec["state"] == "done", spec'
# every agent of the demo did its work (a gate the demo answered for a failed agent would hide it)
failed=$("$python" "$pyz" --home "$demo_home" status --sql \
    "SELECT count(*) AS n FROM iwo_gates WHERE reason = 'agent_failed'" --json \
    | "$python" -c 'import json, sys; print(json.load(sys.stdin)[0]["n"])')
[[ $failed == 0 ]] || { echo "ci-smoke: $failed agent(s) of the demo failed" >&2; false; }
"$python" "$pyz" status                                 # an empty home: an empty table, exit 0
[[ $("$python" "$pyz" status --json) == "[]" ]]
echo "ci-smoke: the zipapp works with Python $(minor "$python") from $scratch/cwd"
