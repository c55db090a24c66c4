#!/usr/bin/env bash
# Build dist/iwo-lite.pyz, one file to carry, with shiv from the pinned versions in requirements.lock.
# (Reproducibility checks, start-up figures and CI smoke tests arrive with the zipapp issue.)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv build/venv
build/venv/bin/pip install -q -c requirements.lock 'shiv==1.0.8'
mkdir -p dist
build/venv/bin/shiv -c iwo-lite -o dist/iwo-lite.pyz --python '/usr/bin/env python3' --compressed --reproducible \
    --constraint requirements.lock .
ls -l dist/iwo-lite.pyz
sha256sum dist/iwo-lite.pyz
