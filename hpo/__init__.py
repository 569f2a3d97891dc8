"""hpo: the public, torch-free Python package shared by the server, the worker and users.

`hpo.protocol` holds what the server and the worker must agree on (states, decisions, the
shapes they exchange); `hpo.client` is the HTTP client of the server; `hpo.config` reads the
environment and the defaults every process shares; `hpo.logs` sets up logging. Nothing here
imports torch, `service` or `trainer` (tests/test_architecture.py checks it).
"""
