"""What a trained probe looks at: attention maps over the patch grid (per frame for video) and what each EP query
contributes.

Run through the model's own forward (``tokens=...``, ``output_attentions=True``, ``uniform_queries=...``), never a
copy of it. The analyses take a loaded probe model; only the commands (`analysis.commands`) load one.
"""

from .attention_maps import (
    attention_to_grid,
    attention_unit,
    count_attention_maps,
    plot_attention_maps,
    plot_video_attention_maps,
    probe_attention_maps,
    save_attention_maps,
    save_video_attention_maps,
)
from .query_analysis import QueryAnalysis, QueryContribution, attention_entropy, query_contributions

__all__ = [
    "QueryAnalysis",
    "QueryContribution",
    "attention_entropy",
    "attention_to_grid",
    "attention_unit",
    "count_attention_maps",
    "plot_attention_maps",
    "plot_video_attention_maps",
    "probe_attention_maps",
    "query_contributions",
    "save_attention_maps",
    "save_video_attention_maps",
]
