"""Errors the domain raises; the API layer maps each class to one HTTP status."""

from __future__ import annotations

from collections.abc import Sequence


class DomainError(Exception):
    """Base class: the message is written for the user and safe to show."""


class NotFound(DomainError):
    """The study, trial, worker or artifact does not exist (404)."""


class Conflict(DomainError):
    """The request clashes with the current state, e.g. a duplicate study name (409)."""


class StaleLease(Conflict):
    """The lease token is not the trial's current one: the trial was re-leased or ended (409)."""


class InvalidInput(DomainError):
    """Input that passed the schema but not the domain's rules (422), with the field's location."""

    def __init__(self, loc: Sequence[str | int], msg: str) -> None:
        super().__init__(msg)
        self.loc = tuple(loc)
        self.msg = msg


class StorageFailed(DomainError):
    """An artifact could not be stored (folder unwritable, disk full): 507."""
