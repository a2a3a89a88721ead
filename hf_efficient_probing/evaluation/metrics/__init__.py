"""`evaluate` metric modules shipped with the package (loaded by path, so they work offline)."""

import os

TOP_K_ACCURACY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "top_k_accuracy")

__all__ = ["TOP_K_ACCURACY_PATH"]
