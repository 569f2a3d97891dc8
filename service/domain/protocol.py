"""The worker protocol: one object built from its three parts.

- `leasing`: workers register, lease trials, heartbeat, deregister (`service.domain.leasing`);
- `reporting`: what a worker says about a leased trial: reports, complete, fail, release,
  checkpoints (`service.domain.reporting`);
- `reaping`: taking trials back from workers that vanished or never heard of them
  (`service.domain.reaping`);
- `models`: completed trials' model files, uploaded by workers and kept for users
  (`service.domain.retention`).

Coordination lives in the database. A lease is a row's (token, expiry); every write checks the
token inside a write transaction, so a worker presumed dead cannot change a trial that was
handed to another. The parts share one `ProtocolContext` (database, Optuna storage, settings,
artifacts, transitions and the clock); tests replace `protocol.context.clock`.
"""

from __future__ import annotations

from service.domain.context import ProtocolContext
from service.domain.leasing import Leasing
from service.domain.reaping import Reaping
from service.domain.reporting import Reporting
from service.domain.retention import ModelKeeping


class Protocol:
    def __init__(self, context: ProtocolContext) -> None:
        self.context = context
        self.reaping = Reaping(self.context)
        self.leasing = Leasing(self.context, self.reaping)
        self.reporting = Reporting(self.context)
        self.models = ModelKeeping(self.context)
