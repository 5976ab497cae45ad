"""Splitting a batch job over a folder across torchrun ranks and nodes, resumably.

Every batch job over many inputs (``distill embed``, ``finetune``'s data preparation,
``everything``, ``eval``) splits its work units the same way: unit ``i`` of a sorted list belongs
to global rank ``i % WORLD_SIZE`` (torchrun's ``RANK`` / ``WORLD_SIZE``, so several nodes simply
add ranks). The parts are disjoint and need no communication; a unit whose output already
exists is skipped, so re-running the same command resumes a killed job.

This module reads only the environment: it imports no torch and starts no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Share:
    """This process's place among the ranks: ``rank`` of ``world`` (0 of 1 without torchrun)."""

    rank: int
    world: int

    @classmethod
    def from_env(cls) -> "Share":
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = int(os.environ.get("RANK", "0") or 0)
        if not 0 <= rank < world:
            raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}; launch with torchrun")
        return cls(rank, world)

    def owns(self, index: int) -> bool:
        return index % self.world == self.rank


def rank_share(items: Sequence[T], share: Optional[Share] = None) -> List[T]:
    """The items of this rank: ``items[i]`` for every ``i`` with ``i % world == rank``."""
    share = share or Share.from_env()
    return [it for i, it in enumerate(items) if share.owns(i)]


def pending(items: Sequence[T], done: Callable[[T], bool], share: Optional[Share] = None) -> Tuple[List[T], int]:
    """(this rank's items whose output is not yet there, how many of its items are done)."""
    mine = rank_share(items, share)
    todo = [it for it in mine if not done(it)]
    return todo, len(mine) - len(todo)
