"""Publishing probes on the Hugging Face Hub: model cards, push, find.

The publishing layer: it works on a loaded probe model and imports no model class (``hub -> checkpoint, analysis``),
so the models call it (``ProbingPreTrainedModel.push_to_hub``) and nothing loops back.
"""

from .cards import LIBRARY_NAME, ProbeCardInfo, build_model_card, card_info_from_summary
from .find import ProbeListing, find_probes
from .push import push_probe_to_hub, save_probe_repository

__all__ = [
    "LIBRARY_NAME",
    "ProbeCardInfo",
    "ProbeListing",
    "build_model_card",
    "card_info_from_summary",
    "find_probes",
    "push_probe_to_hub",
    "save_probe_repository",
]
