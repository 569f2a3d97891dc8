#!/usr/bin/env bash
# Install (from Debian's packages) and start a PostgreSQL server with a `hpo` superuser for
# the test suite. Idempotent: a running server and an existing role are left as they are.
#
# (Not named after postgres on purpose: pg_ctlcluster takes any process whose command line
# holds the word "postgres" for the server, so a stale postmaster.pid from a machine image
# that names this script's PID made it answer "Cluster is already running" and never start.)
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | grep -q "^${version} main"; then
  pg_createcluster "$version" main >/dev/null
fi

ready() { pg_isready -q -h 127.0.0.1; }

if ! ready; then
  # A postmaster.pid left behind by a snapshot may name a live process that is not the server.
  pidfile=/var/lib/postgresql/$version/main/postmaster.pid
  if [ -f "$pidfile" ]; then
    pid=$(head -n 1 "$pidfile")
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" != postgres ]; then
      echo "Removing stale $pidfile (PID $pid is not a PostgreSQL server)"
      rm -f "$pidfile"
    fi
  fi
  pg_ctlcluster "$version" main start || true
  for _ in $(seq 1 30); do
    ready && break
    sleep 1
  done
fi
if ! ready; then
  echo "PostgreSQL $version did not start; the end of its log:" >&2
  tail -n 30 "/var/log/postgresql/postgresql-$version-main.log" >&2 || true
  exit 1
fi
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname = 'hpo'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"CREATE ROLE hpo LOGIN SUPERUSER PASSWORD 'hpo'\""
echo "PostgreSQL $version ready on 127.0.0.1:5432"
