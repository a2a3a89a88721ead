"""Probe heads trained inside `transformers` classification models, converted to probe-only checkpoints.

V-JEPA 2 publishes its attentive probes as ``VJEPA2ForVideoClassification`` checkpoints (e.g.
``facebook/vjepa2-vitl-fpc16-256-ssv2``): the frozen encoder, an attentive pooler and a linear classifier in one
model. Converted, the pooler and the classifier become this library's ``vjepa2`` probe kind (the same module names,
so the weights load unchanged) on the same encoder, named by the checkpoint itself (``AutoModel`` loads its encoder
and drops the head): a probe a few MB large that trains on, caches tokens and publishes like any other. V-JEPA 2's
classifier reads the pooled feature directly, so the converted head has no BatchNorm (``batch_norm=False``): its
logits are V-JEPA 2's.

This lives apart from ``official/`` (the EP authors' code and release): these heads come from `transformers`
models, are read with `transformers`' own classes, and need no pickled files.

    hf-probe convert-vjepa2 facebook/vjepa2-vitl-fpc16-256-ssv2 --output vjepa2-ssv2-probe
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

from transformers import VJEPA2ForVideoClassification

from .configuration_probing import AttentiveProbingConfig
from .modeling_probing import ProbingPreTrainedModel, probe_class_for


def vjepa2_probe(
    classifier: VJEPA2ForVideoClassification,
    name_or_path: str | None = None,
    revision: str | None = None,
    frames_per_clip: int | None = None,
) -> ProbingPreTrainedModel:
    """The ``vjepa2`` probe equal to ``classifier``'s pooler and classifier, on ``classifier``'s own encoder.

    Args:
        classifier: a loaded ``VJEPA2ForVideoClassification``.
        name_or_path: where its weights live (Hub id or local path), recorded as the probe's backbone: loading the
            saved probe re-attaches the encoder from there.
        revision: revision of ``name_or_path``.
        frames_per_clip: frames of the clips the probe reads; by default the checkpoint config's ``frames_per_clip``.
    """
    config = classifier.config
    if config.hidden_act != "gelu":
        raise ValueError(
            f"The vjepa2 probe's MLPs use GELU; this classifier's pooler uses {config.hidden_act!r}, which it cannot "
            "reproduce."
        )
    probe_config = AttentiveProbingConfig(
        backbone_config=copy.deepcopy(config),
        backbone_name_or_path=name_or_path,
        backbone_revision=revision,
        pooler_type="vjepa2",
        pooler_kwargs={
            "num_heads": config.num_attention_heads,
            "num_self_attention_layers": config.num_pooler_layers,
            "layer_norm_eps": config.layer_norm_eps,
        },
        feature_layers=[-1],
        apply_final_norm=True,  # V-JEPA 2's pooler reads the encoder's last_hidden_state, after its final norm
        batch_norm=False,
        frames_per_clip=frames_per_clip,
        num_labels=config.num_labels,
        id2label=dict(config.id2label),
        label2id=dict(config.label2id),
    )
    model = probe_class_for(probe_config)(probe_config, backbone=classifier.vjepa2)
    model.probe.pooling.load_state_dict(classifier.pooler.state_dict())
    model.probe.classifier.load_state_dict(classifier.classifier.state_dict())
    return model.eval()


def convert_vjepa2_classifier(
    name_or_path: str | os.PathLike,
    output: str | os.PathLike,
    revision: str | None = None,
    frames_per_clip: int | None = None,
) -> Path:
    """Load the ``VJEPA2ForVideoClassification`` at ``name_or_path`` and write its probe as a probe-only directory
    (``config.json`` naming the checkpoint as the backbone, ``model.safetensors`` with the probe's tensors)."""
    classifier = VJEPA2ForVideoClassification.from_pretrained(name_or_path, revision=revision)
    model = vjepa2_probe(classifier, str(name_or_path), revision, frames_per_clip)
    model.save_pretrained(output)
    return Path(output)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description="Turn a V-JEPA 2 video classifier (VJEPA2ForVideoClassification) into a vjepa2 probe directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", help="Hub id or path of the VJEPA2ForVideoClassification checkpoint")
    parser.add_argument("--output", required=True, help="probe directory to write")
    parser.add_argument("--revision", default=None, help="revision of the checkpoint on the Hub")
    parser.add_argument(
        "--frames_per_clip", type=int, default=None, help="frames per clip (default: the checkpoint's frames_per_clip)"
    )
    args = parser.parse_args(argv)
    path = convert_vjepa2_classifier(args.checkpoint, args.output, args.revision, args.frames_per_clip)
    print(f"Wrote {path}")
    return path
