#!/usr/bin/env bash
# A Postgres server for the tests, on 127.0.0.1:5432, from Debian's packages: installs the
# package if missing, starts the cluster, creates the role `iwo` (password `iwo`, CREATEDB),
# and prints `export IWO_TEST_POSTGRES_URL=...` for `eval`. Needs root (apt-get, runuser).
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null 2>&1; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
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
