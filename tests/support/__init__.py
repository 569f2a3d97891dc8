"""Scaffolding shared by the tests and the benchmarks, in one place each:

- `processes`: `Processes`, real `hpo server` / `hpo worker` processes logged to files, the one
  server launcher (`Processes.server`, which waits for /healthz), `free_port`, `healthy`,
  `hpo_command`;
- `machine`: `Machine`, the one description of the machine a figure or a table was made on;
- `databases`: `scratch_postgres`, a new empty PostgreSQL database dropped afterwards;
- `waiting`: `wait_for`, polling until something holds;
- `api`: what end-to-end tests ask a real server over HTTP (`get`, `create_study`,
  `study_trials`, `finished`).
- `assignments`: `assignment`, a lease's `Assignment` as a worker receives it, for tests that
  drive a worker by hand.

Bench scripts import it as `tests.support` too: `bench/_repo.py` puts the repository root on
`sys.path` for `python bench/x.py`.
"""
