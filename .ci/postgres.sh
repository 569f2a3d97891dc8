#!/usr/bin/env bash
# Install (from Debian's packages) and start a PostgreSQL server with a `hpo` superuser for
# the test suite. Idempotent: a running server and an existing role are left as they are.
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | grep -q "^${version} main"; then
  pg_createcluster "$version" main >/dev/null
fi
pg_ctlcluster "$version" main start 2>/dev/null || true
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 && break
  sleep 1
done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname = 'hpo'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"CREATE ROLE hpo LOGIN SUPERUSER PASSWORD 'hpo'\""
echo "PostgreSQL $version ready on 127.0.0.1:5432"
