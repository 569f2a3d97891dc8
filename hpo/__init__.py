"""hpo: the public, torch-free Python package shared by the server, the worker and users.

For users: `hpo.Client(url, token=None)` talks to a server (`create_study`, `study`), whose
`Study` objects wait, list trials, build a pandas DataFrame and steer the study. `hpo.protocol`
holds what the server and the worker must agree on (states, decisions, the shapes they
exchange), `hpo.tunables` the built-in trainer's tunables (what the trainer reads, what the
server checks specs against). `hpo.load_model(path)` turns a trial's kept model file into its
PyTorch module (through an entry point the trainer provides). Nothing here imports torch,
`service` or `trainer`.
"""

from hpo.client import ApiError, Client, ServerUnreachable
from hpo.model import ModelFileError, load_model
from hpo.study import BestTrial, Study, Trial

__all__ = [
    "ApiError",
    "BestTrial",
    "Client",
    "ModelFileError",
    "ServerUnreachable",
    "Study",
    "Trial",
    "load_model",
]
