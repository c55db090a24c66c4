#!/usr/bin/env bash
# The real Claude Code CLI for the tests that run it against a local fake API
# (tests/test_claude_cli.py): installs Node.js/npm from Debian's packages when missing, then the
# pinned @anthropic-ai/claude-code into <checkout>/.ci/claude-code (skipped when that version is
# already there), checks that the binary runs offline, and prints
# `export IWO_TEST_CLAUDE=<absolute path>` on stdout (everything else goes to stderr), for
#     eval "$(bash .ci/claude.sh)"
# Nothing is downloaded at run time: the native binary is an npm optional dependency
# (@anthropic-ai/claude-code-linux-x64). Where it cannot set the CLI up it says why and exits 1.
set -euo pipefail
VERSION=2.1.197
say() { echo "claude.sh: $*" >&2; }
cd "$(dirname "$0")/.."
checkout=$(pwd)
prefix="$checkout/.ci/claude-code"

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
        "$prefix/node_modules/@anthropic-ai/claude-code/package.json" 2>/dev/null || true
}

if [ "$(installed_version)" != "$VERSION" ]; then
    say "npm install @anthropic-ai/claude-code@$VERSION into $prefix"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@$VERSION" >&2
else
    say "@anthropic-ai/claude-code@$VERSION already installed in $prefix"
fi

# The offline environment the tests use: no key of ours, nothing reachable but 127.0.0.1.
offline() {
    env -u ANTHROPIC_API_KEY -u CLAUDE_CODE_OAUTH_TOKEN HOME="$(mktemp -d)" \
        ANTHROPIC_BASE_URL=http://127.0.0.1:9 DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1 \
        DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
        HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost "$@"
}

# The install script links the native binary to node_modules/.bin/claude; when npm did not run
# it (--ignore-scripts), .bin/claude is a small stub and the binary is in the platform package.
binary=""
for candidate in "$prefix/node_modules/.bin/claude" \
                 "$prefix/node_modules/@anthropic-ai/claude-code-linux-x64/claude" \
                 "$prefix/node_modules/@anthropic-ai/claude-code-linux-x64-musl/claude"; do
    [ -e "$candidate" ] || continue
    chmod +x "$(readlink -f "$candidate")" 2>/dev/null || true
    if out=$(offline "$candidate" --version 2>/dev/null) && [[ "$out" == "$VERSION"* ]]; then
        binary=$candidate
        break
    fi
    say "$candidate does not run as claude $VERSION (got: ${out:-nothing})"
done
if [ -z "$binary" ]; then
    say "no working claude binary under $prefix"
    exit 1
fi
say "$(offline "$binary" --version) at $binary"
echo "export IWO_TEST_CLAUDE=$binary"
