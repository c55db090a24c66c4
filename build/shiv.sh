#!/usr/bin/env bash
# Build dist/iwo-lite.pyz, one file to carry, with shiv from the pinned versions in requirements.lock.
#
#   bash build/shiv.sh [OUTPUT]        # default OUTPUT: dist/iwo-lite.pyz
#
# Reproducible: two builds of the same tree give the same sha256 (tests/test_zipapp.py checks it).
#   - every version is pinned: the dependencies by requirements.lock, the build tools (shiv,
#     setuptools) by build/requirements-build.txt, installed into their own venv, one per Python
#     minor version (build/venv for the default python3, build/venv-3.12 for PYTHON=python3.12, ...;
#     created on first use; $IWO_BUILD_VENV to use another one, which must be of $PYTHON's version);
#   - the iwo-lite wheel is built first, without build isolation, from a clean copy of the
#     sources (no stale build/ or egg-info), with SOURCE_DATE_EPOCH = the last commit's time;
#   - pip installs it and the dependencies into a staging directory, and build/normalize_site.py
#     removes what names the build machine's paths (bin/ scripts, direct_url.json, their RECORD rows);
#   - shiv --reproducible sorts the entries and stamps every one with SOURCE_DATE_EPOCH.
# The .pyz carries compiled wheels (greenlet, psycopg-binary, SQLAlchemy): it runs on the Python
# minor version and platform it was built with ($PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-dist/iwo-lite.pyz}
python=${PYTHON:-python3}
minor() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
want=$(minor "$python") || { echo "shiv.sh: PYTHON=$python does not run" >&2; exit 2; }
if [ -n "${IWO_BUILD_VENV:-}" ]; then
    venv=$IWO_BUILD_VENV
elif [ "$want" = "$(minor python3 2>/dev/null || true)" ]; then
    venv=build/venv
else
    venv=build/venv-$want      # the wheels in the zipapp are those of the build venv's Python
fi
if [ -x "$venv/bin/python" ] && [ "$(minor "$venv/bin/python")" != "$want" ]; then
    echo "shiv.sh: $venv is a Python $(minor "$venv/bin/python") venv, but PYTHON=$python is $want:" \
         "remove it or set IWO_BUILD_VENV to another directory" >&2
    exit 2
fi
umask 022
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 315532800)}
export SOURCE_DATE_EPOCH PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# One build at a time makes or fills the build venv (the tests build in parallel, pytest -n, with one
# shared venv: another build saw bin/python before bin/pip existed). flock is util-linux's.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install -q -c requirements.lock -r build/requirements-build.txt
flock -u 9
exec 9>&-

work=$(mktemp -d "${TMPDIR:-/tmp}/iwo-lite-shiv.XXXXXX")
trap 'rm -rf "$work" "$out.tmp"' EXIT

# 1. The sources the wheel is made of, copied clean.
mkdir -p "$work/src"
cp pyproject.toml README.md "$work/src/"
for extra in setup.py setup.cfg MANIFEST.in LICENSE LICENSE.txt; do
    if [ -e "$extra" ]; then cp "$extra" "$work/src/"; fi
done
cp -R iwo_lite "$work/src/iwo_lite"
find "$work/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
find "$work/src" -name '*.py[co]' -delete

# 2. The iwo-lite wheel, then everything into a staging site-packages.
"$venv/bin/pip" wheel -q --no-deps --no-build-isolation -w "$work/wheel" "$work/src"
"$venv/bin/pip" install -q --no-compile --no-warn-script-location --target "$work/site" \
    -c requirements.lock "$work"/wheel/iwo_lite-*.whl
"$venv/bin/python" build/normalize_site.py "$work/site"

# 3. The zipapp, written beside its destination and renamed into place (a running copy is not torn).
mkdir -p "$(dirname "$out")"
"$venv/bin/shiv" -c iwo-lite -o "$out.tmp" --python '/usr/bin/env python3' --compressed --reproducible --compile-pyc \
    --site-packages "$work/site"
mv -f "$out.tmp" "$out"

"$venv/bin/python" - "$out" <<'EOF'
import hashlib, os, sys
path = os.path.abspath(sys.argv[1])
data = open(path, "rb").read()
print(f"path:   {path}")
print(f"size:   {len(data)} bytes ({len(data) / 2**20:.1f} MiB)")
print(f"sha256: {hashlib.sha256(data).hexdigest()}")
EOF
