"""hpo: the public, torch-free Python package shared by the server, the worker and users.

For users: `hpo.Client(url, token=None)` talks to a server (`create_study`, `study`), whose
`Study` objects wait, list trials, build a pandas DataFrame and steer the study. `hpo.protocol`
holds what the server and the worker must agree on (states, decisions, the shapes they
exchange), `hpo.tunables` the built-in trainer's tunables (what the trainer reads, what the
server checks specs against). Nothing here imports torch, `service` or `trainer`.
"""

from hpo.client import ApiError, Client, ServerUnreachable
from hpo.study import BestTrial, Study, Trial

__all__ = ["ApiError", "BestTrial", "Client", "ServerUnreachable", "Study", "Trial"]
