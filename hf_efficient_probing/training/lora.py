"""LoRA adapters on the backbone, trained together with the probe through `peft` (the paper's PEFT setting).

The backbone stays frozen except for the adapters. At the end the adapter is saved beside the probe (peft's format,
in ``backbone_adapter/``); ``from_pretrained`` of the saved probe applies it to the backbone the config names.
"""

from __future__ import annotations


def add_lora(
    model,
    rank: int,
    alpha: int = 16,
    target_modules: list[str] | tuple[str, ...] = ("q_proj", "v_proj"),
    dropout: float = 0.0,
):
    """Wrap ``model.backbone`` with LoRA adapters of ``rank`` on ``target_modules``; only they and the probe train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:  # pragma: no cover - peft is an optional dependency
        raise ImportError("LoRA needs peft: pip install 'hf-efficient-probing[peft]'.") from error
    names = {name.rsplit(".", 1)[-1] for name, _ in model.backbone.named_modules()}
    missing = [module for module in target_modules if module not in names]
    if missing:
        raise ValueError(
            f"The backbone has no modules named {missing} for LoRA. Linear layers it has include "
            f"{sorted(n for n in names if 'proj' in n or 'fc' in n or n in ('query', 'key', 'value', 'dense'))}."
        )
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=dropout, bias="none"
    )
    model.backbone = get_peft_model(model.backbone, config)
    model.config.freeze_backbone = False  # gradients must flow through the backbone to reach the adapters
    return model


def has_lora(model) -> bool:
    return hasattr(model.backbone, "peft_config")


def freeze_lora(model):
    """Freeze the backbone again, adapter included, once training is over: the model is then saved probe-sized,
    with the adapter beside the probe."""
    model.config.freeze_backbone = True
    model.backbone.requires_grad_(False)
    model.backbone.eval()
    return model
