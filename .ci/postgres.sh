#!/usr/bin/env bash
# A Postgres server for the tests (tests/test_postgres.py), from Debian's packages, on
# 127.0.0.1: installs the package if missing, starts the cluster, creates the role `iwo`
# (password `iwo`, CREATEDB), and prints `export IWO_TEST_POSTGRES_URL=...` for `eval`.
# Needs root (apt-get, runuser). Where it cannot set one up it says why on stderr and prints
# nothing: the Postgres tests then skip, saying so — except under CI=true, where they fail.
# With IWO_TEST_POSTGRES_URL already set it only repeats it.
set -uo pipefail
say() { echo "postgres.sh: $*" >&2; }
if [ -n "${IWO_TEST_POSTGRES_URL:-}" ]; then
    echo "export IWO_TEST_POSTGRES_URL=$IWO_TEST_POSTGRES_URL"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "not root: no test server set up (set IWO_TEST_POSTGRES_URL to a server where you may CREATE DATABASE)"
    exit 0
fi
set -e
if ! command -v pg_lsclusters >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2
fi
cluster=$(pg_lsclusters --no-header | head -n 1)
if [ -z "$cluster" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    pg_createcluster "$version" main >&2
    cluster=$(pg_lsclusters --no-header | head -n 1)
fi
read -r version name port status _ <<<"$cluster"
if [ "$status" != "online" ]; then
    pg_ctlcluster "$version" "$name" start >&2
fi
for _ in $(seq 1 50); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 0.2
done
runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 >&2 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'iwo') THEN
    CREATE ROLE iwo LOGIN CREATEDB PASSWORD 'iwo';
  END IF;
END $$;
SQL
echo "export IWO_TEST_POSTGRES_URL=postgresql://iwo:iwo@127.0.0.1:$port/postgres"
