"""Import probe heads trained with the official EP code (github.com/billpsomas/efficient-probing).

The official head is ``nn.Sequential(pooling, BatchNorm1d(affine=False, eps=1e-6), classifier)``: state-dict keys
``0.*`` (pooling), ``1.*`` (BatchNorm statistics), ``2.*`` (classifier). A linear probe has no pooling: ``0.*`` is
the BatchNorm and ``1.*`` the classifier. The released ``ep_head.pth`` files wrap the head's state dict as
``{"state_dict": ..., "meta": {...}}``. Files are read with ``torch.load(weights_only=True)`` only.

``python -m hf_efficient_probing.conversion ep_head.pth --backbone facebook/vit-mae-base --output my-probe`` writes a
probe directory ready for ``from_pretrained`` and ``push_to_hub``.
"""

from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .probes import ProbeHead, build_pooling


@dataclass(frozen=True)
class OfficialPooling:
    """How one official pooling maps onto this library.

    Attributes:
        pooling: name of the library pooling (see ``probes.POOLINGS``).
        pooling_kwargs: the library pooling's kwargs from the official command-line arguments.
        key_map: official pooling key (after the ``0.`` prefix) -> library pooling key; keys not listed keep their
            name.
        hidden_size_key: official pooling key whose last dimension is the token width (to infer it).
    """

    pooling: str
    pooling_kwargs: Callable[[dict], dict]
    key_map: dict[str, str]
    hidden_size_key: str | None = None


OFFICIAL_POOLINGS: dict[str, OfficialPooling] = {
    "ep": OfficialPooling(
        "ep",
        lambda args: {"num_queries": int(args.get("ep_queries", 32)), "d_out": int(args.get("d_out", 1))},
        {"cls_token": "queries", "v.weight": "value.weight", "v.bias": "value.bias"},
        hidden_size_key="cls_token",
    ),
    # Linear probes: the official head has no pooling module ("cls" = [CLS] token, "pos" = mean of patch tokens).
    "cls": OfficialPooling("linear", lambda args: {"features": "cls"}, {}),
    "pos": OfficialPooling("linear", lambda args: {"features": "gap"}, {}),
}

_NO_POOLING = {name for name, spec in OFFICIAL_POOLINGS.items() if spec.pooling == "linear"}


def read_official_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read an official head file safely; returns ``(state_dict, meta)``."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} cannot be read without unpickling arbitrary Python objects, which hf-efficient-probing refuses "
            "to do (it could run code). Export the head with the official tools/export_ep_heads.py (tensors and "
            f"plain metadata only) or save just its state dict. Details: {error}"
        ) from None
    except OSError:
        raise
    except Exception as error:  # the weights-only unpickler raises many kinds of errors on malformed bytes
        raise ValueError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): {error}") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state dict or an ep_head.pth dict.")
    return _split_checkpoint(checkpoint)


def _split_checkpoint(checkpoint: dict) -> tuple[dict[str, torch.Tensor], dict]:
    if "state_dict" in checkpoint:
        return checkpoint["state_dict"], dict(checkpoint.get("meta") or {})
    if "model" in checkpoint and isinstance(checkpoint["model"], dict):  # a raw official training checkpoint
        return checkpoint["model"], {}
    return checkpoint, {}


def _strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state_dict and all(key.startswith("head.") for key in state_dict):
        return {key[len("head.") :]: value for key, value in state_dict.items()}
    return dict(state_dict)


def load_official_head(
    state_dict_or_path: dict | str | os.PathLike,
    pooling: str | None = None,
    hidden_size: int | None = None,
    num_labels: int | None = None,
    **official_args,
) -> ProbeHead:
    """Build this library's :class:`ProbeHead` holding the weights of an official-code head.

    Args:
        state_dict_or_path: the official head's state dict (``0.*``/``1.*``/``2.*``, optionally under ``head.``),
            a released ``{"state_dict", "meta"}`` dict, or a path to either saved with ``torch.save``.
        pooling: the official pooling name (``--cls_features``; ``ep_all`` means ``ep``). Read from ``meta`` when
            omitted.
        hidden_size: token width D (inferred from the weights when omitted).
        num_labels: number of classes (inferred from the classifier when omitted).
        **official_args: official command-line arguments (``ep_queries``, ``d_out``, ``num_heads``, ``abmilp_*``);
            those that do not apply to the pooling are ignored. ``meta`` supplies them when omitted.

    Returns:
        The head in eval mode; ``head(tokens).logits`` equals the official head's output on the same tokens.
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        state_dict, meta = read_official_checkpoint(state_dict_or_path)
    else:
        state_dict, meta = _split_checkpoint(state_dict_or_path)
    args = {**{k: v for k, v in meta.items() if k in ("ep_queries", "d_out")}, **official_args}
    pooling = pooling or meta.get("cls_features")
    if pooling is None:
        raise ValueError("Name the official pooling: load_official_head(..., pooling='ep').")
    pooling = pooling.removesuffix("_all")
    if pooling not in OFFICIAL_POOLINGS:
        raise ValueError(f"Unknown official pooling {pooling!r}; supported: {sorted(OFFICIAL_POOLINGS)}.")
    spec = OFFICIAL_POOLINGS[pooling]
    state_dict = _strip_prefix(state_dict)
    norm_index, classifier_index = ("0", "1") if pooling in _NO_POOLING else ("1", "2")

    classifier_weight = state_dict.get(f"{classifier_index}.weight")
    if classifier_weight is None:
        raise ValueError(
            f"No classifier weight '{classifier_index}.weight' in the state dict (keys: {sorted(state_dict)[:8]}...). "
            f"Is this a {pooling!r} head of the official code?"
        )
    if num_labels is not None and classifier_weight.shape[0] != num_labels:
        raise ValueError(f"num_labels={num_labels}, but the classifier has {classifier_weight.shape[0]} outputs.")
    num_labels = classifier_weight.shape[0]
    if hidden_size is None:
        source = state_dict.get(f"0.{spec.hidden_size_key}") if spec.hidden_size_key else classifier_weight
        if source is None:
            raise ValueError("Cannot infer hidden_size from the state dict; pass hidden_size=.")
        hidden_size = source.shape[-1] // (2 if spec.pooling_kwargs(args).get("features") == "cls+gap" else 1)

    head = ProbeHead(build_pooling(spec.pooling, hidden_size, **spec.pooling_kwargs(args)), num_labels)
    converted = {}
    for key, value in state_dict.items():
        index, _, rest = key.partition(".")
        if index == norm_index:
            converted[f"norm.{rest}"] = value
        elif index == classifier_index:
            converted[f"classifier.{rest}"] = value
        elif index == "0" and pooling not in _NO_POOLING:
            converted[f"pooling.{spec.key_map.get(rest, rest)}"] = value
        else:
            raise ValueError(f"Unexpected key {key!r} for an official {pooling!r} head.")
    expected = head.state_dict()
    problems = sorted(set(expected) ^ set(converted)) + [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if problems:
        raise ValueError(
            f"The state dict does not match an official {pooling!r} head with hidden_size={hidden_size}, "
            f"num_labels={num_labels} and {spec.pooling_kwargs(args)}: {problems}. Check the official arguments."
        )
    head.load_state_dict(converted)
    return head.eval()


def convert_to_probe_directory(
    checkpoint: str | os.PathLike,
    backbone: str,
    output_dir: str | os.PathLike,
    pooling: str | None = None,
    backbone_revision: str | None = None,
    **official_args,
):
    """Write a probe directory (config + probe-only safetensors) for an official head on a HF backbone whose
    weights match the official one. Returns the loaded model."""
    from .modeling_probing import AutoModelForEfficientProbing

    state_dict, meta = read_official_checkpoint(checkpoint)
    pooling = pooling or meta.get("cls_features")
    head = load_official_head({"state_dict": state_dict, "meta": meta}, pooling=pooling, **official_args)
    spec = OFFICIAL_POOLINGS[(pooling or "").removesuffix("_all")]
    probe_kwargs = dict(spec.pooling_kwargs({**meta, **official_args}))
    if pooling and pooling.endswith("_all"):
        probe_kwargs["token_selection"] = "all"
    model = AutoModelForEfficientProbing.from_backbone(
        backbone,
        probe=spec.pooling,
        revision=backbone_revision,
        num_labels=head.classifier.out_features,
        **probe_kwargs,
    )
    model.probe.load_state_dict(head.state_dict())
    model.save_pretrained(output_dir)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert an official EP-code probe head into a probe directory.")
    parser.add_argument("checkpoint", help="official head file (ep_head.pth or a head state dict)")
    parser.add_argument("--backbone", required=True, help="Hub id or path of the matching transformers backbone")
    parser.add_argument("--backbone-revision", default=None)
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--pooling", default=None, help="official --cls_features value (default: from meta)")
    parser.add_argument("--ep-queries", type=int, default=None)
    parser.add_argument("--d-out", type=int, default=None)
    args = parser.parse_args(argv)
    official_args = {k: v for k, v in {"ep_queries": args.ep_queries, "d_out": args.d_out}.items() if v is not None}
    model = convert_to_probe_directory(
        args.checkpoint, args.backbone, args.output, args.pooling, args.backbone_revision, **official_args
    )
    print(f"wrote {args.output}: {type(model).__name__} on {args.backbone}")


if __name__ == "__main__":
    main()
