"""Side-by-side benchmarks of the zoo against its peers; see benchmarks/RESULTS.md.

Each module runs as ``python -m benchmarks.<name> [--smoke] [--device cpu|cuda]`` and exposes
``main(argv) -> Report``; ``python -m benchmarks.run_all`` runs them all and rewrites
RESULTS.md.
"""

BENCHMARKS = ("student", "mixture", "importance", "importance_eval", "vae_step", "fixed_cost", "vae_epoch",
              "checkpointing", "distributed", "ais")

__all__ = ["BENCHMARKS"]
