#!/usr/bin/env bash
# Everything the test suite needs beyond Python, on a fresh Debian machine (Python, pip and apt
# only): python3-venv, git, tmux, bubblewrap (the agents' sandbox) and chromium (the dashboard's browser tests) from apt when missing; a Postgres server (.ci/postgres.sh);
# Node.js and the pinned Claude Code CLI from npm (.ci/claude.sh). Prints the `export` lines
# the tests read, for
#     eval "$(bash .ci/setup.sh)"
# Progress goes to stderr. Needs root for apt (as on CI); elsewhere install those by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v git >/dev/null 2>&1 || need+=(git)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
# the dashboard's browser tests: Debian's Chromium, driven by the pinned playwright package (no download)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >&2
    else
        echo "setup.sh: please install ${need[*]}" >&2
    fi
fi
bash .ci/postgres.sh
bash .ci/claude.sh
bash .ci/codex.sh
