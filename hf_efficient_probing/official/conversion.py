"""Import probe heads trained with the official EP code (github.com/billpsomas/efficient-probing).

The official head is ``nn.Sequential(pooling, BatchNorm1d(affine=False, eps=1e-6), classifier)``: state-dict keys
``0.*`` (pooling), ``1.*`` (BatchNorm statistics), ``2.*`` (classifier). A linear probe has no pooling: ``0.*`` is
the BatchNorm and ``1.*`` the classifier. The released ``ep_head.pth`` files wrap the head's state dict as
``{"state_dict": ..., "meta": {...}}``. Files are read with ``torch.load(weights_only=True)`` only.

``python -m hf_efficient_probing.official.conversion ep_head.pth --backbone timm/vit_base_patch16_224.mae --output
my-probe`` writes a probe directory ready for ``from_pretrained`` and ``push_to_hub``.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..modeling_probing import AutoModelForEfficientProbing
from ..probes import ProbeHead, build_pooling, probe_kind


@dataclass(frozen=True)
class OfficialPooling:
    """How one official pooling maps onto this library.

    Attributes:
        pooling: name of the library pooling (see ``probes.POOLINGS``).
        pooling_kwargs: the library pooling's kwargs from the official command-line arguments.
        key_map: official pooling key (after the ``0.`` prefix) -> library pooling key. An entry ending in ``.``
            renames every key under that prefix; keys not listed keep their name.
        hidden_size_key: official pooling key whose last dimension is the token width (to infer it).
        dropped_keys: official keys the library recomputes instead of storing (fixed, non-trained tensors).
        kwargs_from_weights: library kwargs read off the official state dict (e.g. a grid size fixed at training).
    """

    pooling: str
    pooling_kwargs: Callable[[dict], dict]
    key_map: dict[str, str]
    hidden_size_key: str | None = None
    dropped_keys: tuple[str, ...] = ()
    kwargs_from_weights: Callable[[dict], dict] = lambda state_dict: {}

    def library_key(self, official_key: str) -> str:
        if official_key in self.key_map:
            return self.key_map[official_key]
        for prefix, target in self.key_map.items():
            if prefix.endswith(".") and official_key.startswith(prefix):
                return target + official_key[len(prefix) :]
        return official_key


def _num_heads(default: int) -> Callable[[dict], dict]:
    """The official ``--num_heads`` (default 16), for the poolings it applies to (aim, jepa)."""
    return lambda args: {"num_heads": int(args.get("num_heads", default))}


def _abmilp_kwargs(args: dict) -> dict:
    cond = args.get("abmilp_cond")
    return {
        "self_attention": args.get("abmilp_sa", "both"),
        "activation": args.get("abmilp_act", "tanh"),
        "depth": int(args.get("abmilp_depth", 2)),
        "cond": None if cond in (None, "none", "None") else cond,
        "content": args.get("abmilp_content", "all"),
    }


def _clip_grid(state_dict: dict) -> dict:
    """The official clip position embedding is learned for a fixed square grid (14, or 16 for CAPI)."""
    rows = state_dict.get("pos_embed")
    if rows is None:
        return {}
    side = math.isqrt(rows.shape[0] - 1)
    return {} if side == 14 else {"native_grid": side}


def _no_kwargs(args: dict) -> dict:
    return {}


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
    "abmilp": OfficialPooling(
        "abmilp",
        _abmilp_kwargs,
        {"self_attn.": "self_attention.", "attention_predictor.": "scorer."},
        dropped_keys=("pos_embed",),
    ),
    "simpool": OfficialPooling(
        "simpool", _no_kwargs, {"norm_patches.": "norm.", "wq.weight": "q_proj.weight", "wk.weight": "k_proj.weight"}
    ),
    "esimpool": OfficialPooling("esimpool", _no_kwargs, {"norm_patches.": "norm."}),
    "clip": OfficialPooling(
        "clip", _no_kwargs, {"pos_embed": "position_embedding", "proj.": "out_proj."}, kwargs_from_weights=_clip_grid
    ),
    "siglip": OfficialPooling("siglip", _no_kwargs, {"q.": "q_proj.", "kv.": "kv_proj.", "proj.": "out_proj."}),
    "aim": OfficialPooling(
        "aim",
        _num_heads(16),
        {"cls_token": "query", "k.weight": "k_proj.weight", "v.weight": "v_proj.weight", "bn.": "token_norm."},
    ),
    "coca": OfficialPooling(
        "coca",
        _no_kwargs,
        {
            "img_queries": "queries",
            "norm.gamma": "query_norm_weight",
            "norm.beta": "query_norm_bias",
            "to_q.": "q_proj.",
            "to_kv.": "kv_proj.",
            "to_out.": "out_proj.",
        },
    ),
    "cait": OfficialPooling(
        "cait",
        _no_kwargs,
        {
            "blocks_token_only.0.gamma_1": "attn_scale",
            "blocks_token_only.0.gamma_2": "mlp_scale",
            "blocks_token_only.0.norm1.": "attn_norm.",
            "blocks_token_only.0.attn.q.": "q_proj.",
            "blocks_token_only.0.attn.k.": "k_proj.",
            "blocks_token_only.0.attn.v.": "v_proj.",
            "blocks_token_only.0.attn.proj.": "out_proj.",
            "blocks_token_only.0.norm2.": "mlp_norm.",
            "blocks_token_only.0.mlp.": "mlp.",
            "norm.": "final_norm.",
        },
    ),
    "dinovit": OfficialPooling(
        "dinovit",
        _no_kwargs,
        {
            "dino_block.norm1.": "attn_norm.",
            "dino_block.attn.qkv.": "qkv.",
            "dino_block.attn.proj.": "out_proj.",
            "dino_block.norm2.": "mlp_norm.",
            "dino_block.mlp.": "mlp.",
        },
    ),
    "jepa": OfficialPooling(
        "jepa",
        _num_heads(16),
        {
            "query_tokens": "query",
            "cross_attention_block.norm1.": "token_norm.",
            "cross_attention_block.xattn.q.": "q_proj.",
            "cross_attention_block.xattn.kv.": "kv_proj.",
            "cross_attention_block.xattn.proj.": "out_proj.",
            "cross_attention_block.norm2.": "mlp_norm.",
            "cross_attention_block.mlp.": "mlp.",
        },
    ),
    "dolg": OfficialPooling("dolg", _no_kwargs, {"bn.": "norm."}),
    "cae": OfficialPooling(
        "cae",
        _no_kwargs,
        {
            "query_token": "query",
            "norm1_q.": "query_norm.",
            "norm1_k.": "key_norm.",
            "norm1_v.": "value_norm.",
            "norm2_cross.": "unused_norm.",
            "cross_attn.q.": "q_proj.",
            "cross_attn.k.": "k_proj.",
            "cross_attn.v.": "v_proj.",
            "cross_attn.proj.": "out_proj.",
        },
    ),
    "cbam": OfficialPooling(
        "cbam",
        _no_kwargs,
        {
            "channel.fc1.": "channel_fc1.",
            "channel.fc2.": "channel_fc2.",
            "spatial.conv.conv.": "spatial_conv.",
            "spatial.conv.bn.": "spatial_norm.",
        },
    ),
}

OFFICIAL_ARGS = (
    "ep_queries",
    "d_out",
    "num_heads",
    "abmilp_sa",
    "abmilp_act",
    "abmilp_depth",
    "abmilp_cond",
    "abmilp_content",
)

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
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as error:  # malformed bytes raise many kinds of errors (a truncated file: OSError from the zip)
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


def _from_conv1x1(value: torch.Tensor, expected: torch.Tensor | None) -> torch.Tensor:
    """Official 1x1 convolution weights ``[out, in, 1, 1]`` are linear weights ``[out, in]`` here."""
    if expected is not None and value.ndim == 4 and value.shape[2:] == (1, 1) and value.shape[:2] == expected.shape:
        return value.reshape(expected.shape)
    return value


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
    args = {**{k: v for k, v in meta.items() if k in OFFICIAL_ARGS}, **official_args}
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

    pooling_state = {key[2:]: value for key, value in state_dict.items() if key.startswith("0.")}
    pooling_kwargs = {**spec.pooling_kwargs(args), **spec.kwargs_from_weights(pooling_state)}
    head = ProbeHead(build_pooling(spec.pooling, hidden_size, **pooling_kwargs), num_labels)
    expected = head.state_dict()
    converted = {}
    for key, value in state_dict.items():
        index, _, rest = key.partition(".")
        if index == norm_index:
            converted[f"norm.{rest}"] = value
        elif index == classifier_index:
            converted[f"classifier.{rest}"] = value
        elif index == "0" and pooling not in _NO_POOLING:
            if rest in spec.dropped_keys:
                continue
            key = f"pooling.{spec.library_key(rest)}"
            converted[key] = _from_conv1x1(value, expected.get(key))
        else:
            raise ValueError(f"Unexpected key {key!r} for an official {pooling!r} head.")
    problems = sorted(set(expected) ^ set(converted)) + [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if problems:
        raise ValueError(
            f"The state dict does not match an official {pooling!r} head with hidden_size={hidden_size}, "
            f"num_labels={num_labels} and {pooling_kwargs}: {problems}. Check the official arguments."
        )
    head.load_state_dict(converted)
    return head.eval()


def build_official_probe(
    state_dict: dict[str, torch.Tensor],
    meta: dict,
    backbone,
    pooling: str | None = None,
    backbone_revision: str | None = None,
    probe_settings: dict | None = None,
    hub_kwargs: dict | None = None,
    **official_args,
):
    """A probe on a HF backbone (a Hub id, a path or a loaded model) holding an official head's weights.

    ``pooling`` (the official ``--cls_features``) and the official arguments default to the head's ``meta``; an
    ``_all`` pooling reads the [CLS] token before the patches, as the official code does. ``probe_settings`` are
    further fields of the probe config, which say which tokens the official loader handed the head
    (``token_selection``, ``feature_layers``, ``apply_final_norm``, ``interpolate_offset``) and pin the backbone
    (``backbone_overrides``); ``hub_kwargs`` are for loading the backbone (``token``, ``cache_dir``, ...)."""
    pooling = pooling or meta.get("cls_features")
    head = load_official_head({"state_dict": state_dict, "meta": meta}, pooling=pooling, **official_args)
    spec = OFFICIAL_POOLINGS[(pooling or "").removesuffix("_all")]
    args = {**{k: v for k, v in meta.items() if k in OFFICIAL_ARGS}, **official_args}
    pooling_state = {k[2:]: v for k, v in _strip_prefix(state_dict).items() if k.startswith("0.")}
    probe_kwargs = {**spec.pooling_kwargs(args), **spec.kwargs_from_weights(pooling_state)}
    if probe_kind(spec.pooling).is_attentive:  # the baselines' hyper-parameters live in AttentiveProbingConfig
        probe_kwargs = {"pooler_kwargs": probe_kwargs}
    if pooling and pooling.endswith("_all"):
        probe_kwargs["token_selection"] = "all"
    probe_kwargs.update(probe_settings or {})
    model = AutoModelForEfficientProbing.from_backbone(
        backbone,
        probe=spec.pooling,
        revision=backbone_revision,
        hub_kwargs=hub_kwargs,
        num_labels=head.classifier.out_features,
        **probe_kwargs,
    )
    model.probe.load_state_dict(head.state_dict())
    return model.eval()


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
    state_dict, meta = read_official_checkpoint(checkpoint)
    model = build_official_probe(state_dict, meta, backbone, pooling, backbone_revision, **official_args)
    model.save_pretrained(output_dir)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Convert an official EP-code probe head into a probe directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", help="official head file (ep_head.pth or a head state dict)")
    parser.add_argument("--backbone", required=True, help="Hub id or path of the matching transformers backbone")
    parser.add_argument("--backbone-revision", default=None)
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--pooling", default=None, help="official --cls_features value (default: from meta)")
    parser.add_argument("--ep-queries", type=int, default=None)
    parser.add_argument("--d-out", type=int, default=None)
    parser.add_argument("--num-heads", type=int, default=None, help="official --num_heads (aim, jepa; default 16)")
    parser.add_argument("--abmilp-sa", default=None, choices=["none", "map", "both"])
    parser.add_argument("--abmilp-act", default=None, choices=["tanh", "relu"])
    parser.add_argument("--abmilp-depth", type=int, default=None)
    parser.add_argument("--abmilp-cond", default=None, choices=["none", "pe"])
    parser.add_argument("--abmilp-content", default=None, choices=["all", "patch"])
    args = parser.parse_args(argv)
    official_args = {name: getattr(args, name) for name in OFFICIAL_ARGS if getattr(args, name) is not None}
    model = convert_to_probe_directory(
        args.checkpoint, args.backbone, args.output, args.pooling, args.backbone_revision, **official_args
    )
    print(f"wrote {args.output}: {type(model).__name__} on {args.backbone}")


if __name__ == "__main__":
    main()
