#!/usr/bin/env bash
# The real OpenAI Codex CLI for the tests that run it against a local fake Responses API
# (tests/test_codex_cli.py, tests/test_codex_agent_real.py): installs Node.js/npm from Debian's
# packages when missing, then the pinned @openai/codex into <checkout>/.ci/codex (skipped when
# that version is already there), checks that the native binary runs, and prints
# `export IWO_TEST_CODEX=<absolute path of the native binary>` on stdout (everything else goes
# to stderr), for
#     eval "$(bash .ci/codex.sh)"
# The native binary comes as an npm optional dependency (@openai/codex-linux-x64). It is run
# directly, not through bin/codex.js: on node 20 that wrapper spawns the binary as a child, so
# killing the wrapper would leave codex and its tools running. Where it cannot set the CLI up
# it says why and exits 1.
set -euo pipefail
VERSION=0.169.0
say() { echo "codex.sh: $*" >&2; }
cd "$(dirname "$0")/.."
checkout=$(pwd)
prefix="$checkout/.ci/codex"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        say "node/npm missing and not root: install Node.js (>= 18) and npm, then run this again"
        exit 1
    fi
    say "installing nodejs and npm from apt"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; } >&2
fi

installed_version() {
    node -e 'try{console.log(require(process.argv[1]).version)}catch(e){}' \
        "$prefix/node_modules/@openai/codex/package.json" 2>/dev/null || true
}

if [ "$(installed_version)" != "$VERSION" ]; then
    say "npm install @openai/codex@$VERSION into $prefix"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "@openai/codex@$VERSION" >&2
else
    say "@openai/codex@$VERSION already installed in $prefix"
fi

binary=""
for candidate in "$prefix"/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex \
                 "$prefix"/node_modules/@openai/codex/vendor/x86_64-unknown-linux-musl/bin/codex \
                 "$prefix"/node_modules/@openai/codex-linux-arm64/vendor/aarch64-unknown-linux-musl/bin/codex \
                 "$prefix"/node_modules/@openai/codex/vendor/aarch64-unknown-linux-musl/bin/codex; do
    [ -e "$candidate" ] || continue
    chmod +x "$candidate" 2>/dev/null || true
    if out=$(env -u OPENAI_API_KEY CODEX_HOME="$(mktemp -d -p "$prefix")" "$candidate" --version 2>/dev/null) \
            && [[ "$out" == *"$VERSION"* ]]; then
        binary=$candidate
        break
    fi
    say "$candidate does not run as codex $VERSION (got: ${out:-nothing})"
done
rm -rf "$prefix"/tmp.* 2>/dev/null || true
if [ -z "$binary" ]; then
    say "no working codex binary under $prefix"
    exit 1
fi
say "$("$binary" --version) at $binary"
echo "export IWO_TEST_CODEX=$binary"
