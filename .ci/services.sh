# Sourced by .ci/run and .ci/upgrade_check.py's shell: install and start what the test suite
# needs beyond Python packages, and export the variables that make the suite require them
# (a missing service fails the run instead of skipping its tests).

# need COMMAND PACKAGE: Debian's PACKAGE when COMMAND is missing (one `apt-get update` a run).
need() {
    command -v "$1" >/dev/null && return
    if [ -z "${apt_updated:-}" ]; then apt-get update -qq && apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# The page's browser tests drive Debian's Chromium through Playwright (never `playwright install`).
need chromium chromium
# Without Chromium or Playwright the page tests fail instead of skipping.
export HPO_REQUIRE_BROWSER=1

# The storage and API suite runs against SQLite and PostgreSQL; PostgreSQL must be there.
bash .ci/database.sh
export HPO_TEST_POSTGRES_URL="postgresql+psycopg://hpo:hpo@127.0.0.1:5432/postgres"
export HPO_REQUIRE_POSTGRES=1

# Issue 17, beyond one box. tests/deploy/test_kubernetes.py renders deploy/kubernetes with
# `kubectl kustomize` (no cluster), and tests/e2e/test_slurm.py submits a job array of workers
# to a one-node Slurm cluster on this machine (slurmctld, slurmd and munge from Debian's
# packages; .ci/slurm.sh installs, configures and starts them). Both fail rather than skip.
need kubectl kubectl
export HPO_REQUIRE_KUBECTL=1
bash .ci/slurm.sh
export HPO_REQUIRE_SLURM=1
# tests/reliability/test_database_outage.py fails a database over behind Debian's PgBouncer.
need pgbouncer pgbouncer
export HPO_REQUIRE_PGBOUNCER=1

# Issue 19, item 5: tests/deploy/test_compose.py reads docker/compose.yml through a real compose
# implementation, podman-compose's `config` (a dev dependency from PyPI; Debian's 1.0.3 has no
# `config`). It runs `podman version` first, so the podman binary must be there; no container
# engine runs. HPO_REQUIRE_PODMAN makes the compose tests fail without it (they skip elsewhere).
need podman podman
export HPO_REQUIRE_PODMAN=1
