"""hpo: the public, torch-free Python package shared by the server, the worker and users.

`hpo.protocol` holds what the server and the worker must agree on (states, decisions, the
shapes they exchange). Nothing here imports torch, `service` or `trainer`.
"""
