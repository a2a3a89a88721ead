"""Publishing probes on the Hugging Face Hub: model cards, push, find, the import of the official release.

Builds on the models, their checkpoints and the attention-map figures (``hub -> modeling_probing, checkpoint,
analysis``), never the other way round; ``ProbingPreTrainedModel.push_to_hub`` imports this package only when called.
"""

from .cards import LIBRARY_NAME, ProbeCardInfo, build_model_card, card_info_from_summary
from .find import ProbeListing, find_probes
from .push import push_probe_to_hub, push_training_run, save_probe_repository

__all__ = [
    "LIBRARY_NAME",
    "ProbeCardInfo",
    "ProbeListing",
    "build_model_card",
    "card_info_from_summary",
    "find_probes",
    "push_probe_to_hub",
    "push_training_run",
    "save_probe_repository",
]
