"""Publishing probes on the Hugging Face Hub: model cards, push, find, attention maps and the per-query analysis.

Builds on the models (``hub -> modeling_probing``), never the other way round; ``ProbingPreTrainedModel.push_to_hub``
imports this package only when called.
"""

from .attention_maps import (
    attention_to_grid,
    load_image_processor,
    plot_attention_maps,
    probe_attention_maps,
    save_attention_maps,
)
from .cards import LIBRARY_NAME, ProbeCardInfo, build_model_card, card_info_from_summary
from .find import ProbeListing, find_probes
from .push import push_probe_to_hub, push_training_run, save_probe_repository

__all__ = [
    "LIBRARY_NAME",
    "ProbeCardInfo",
    "ProbeListing",
    "attention_to_grid",
    "build_model_card",
    "card_info_from_summary",
    "find_probes",
    "load_image_processor",
    "plot_attention_maps",
    "probe_attention_maps",
    "push_probe_to_hub",
    "push_training_run",
    "save_attention_maps",
    "save_probe_repository",
]
