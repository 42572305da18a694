"""Which seed each run of a study trains with.

Each study seed owns a block of trial seeds, so that studies run with different seeds share no
final run (their final seeds were once ``seed + 1, seed + 2, ...``: seeds 0 and 1 shared all but
one, and a "replication" of a study re-ran most of its runs). Seed 0's block starts at 0, so its
final seeds are 1, 2, 3, ... as they always were.
"""

from __future__ import annotations

__all__ = ["MOST_REPLICATES", "MOST_SEEDS", "SEED_BLOCK", "final_seed", "replicate_seed"]

SEED_BLOCK = 100_000
MOST_SEEDS = 999  # final seeds a cell may run: they stay below the replicates' seeds
MOST_REPLICATES = 99  # replicate searches: they stay inside the block


def final_seed(seed: int, k: int) -> int:
    """The seed of final run ``k`` (0-based) of every cell of a study seeded ``seed``."""
    return seed * SEED_BLOCK + 1 + k


def replicate_seed(seed: int, replicate: int) -> int:
    """The seed replicate ``replicate`` (0-based) of a ``final_config = "replicates"`` study
    trains its search trials with: apart from its final seeds and from every other study's."""
    return seed * SEED_BLOCK + 1000 * (replicate + 1)
