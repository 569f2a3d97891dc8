"""GET /api/v1/tunables: the built-in trainer's tunables, as hpo.tunables declares them."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from hpo.tunables import TUNABLES, Tunable
from service.api.auth import user_access

router = APIRouter(prefix="/api/v1", tags=["tunables"], dependencies=[Depends(user_access)])


class TunablePublic(Tunable):
    """One tunable, with its allowed values and scope also in words."""

    allows: str = Field(description="the allowed values in words")
    read_for: str = Field(description="the models, optimizers or norms that read it")


class TunableList(BaseModel):
    items: list[TunablePublic]


@router.get("/tunables", response_model=TunableList)
async def list_tunables() -> TunableList:
    """What a spec's `space` and `workload` may set for the built-in models (mlp, cnn,
    resnet): the server refuses any other value of these names with 422 before it creates a
    study. A name declared twice (`depth`, `channels`) differs per model."""
    return TunableList(
        items=[
            TunablePublic(**t.model_dump(), allows=t.allowed(), read_for=t.applies_to())
            for t in TUNABLES
        ]
    )
