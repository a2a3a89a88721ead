"""The probe kinds: one registration per kind ties the name a user types to its pooling and to its config.

A kind's name is what ``--probe``, ``from_backbone(probe=...)`` and a grid member take (``"ep"``, ``"linear"``,
``"aim"``, ...). Its record says which `Pooling` computes it and which probe config configures it, by that config's
``model_type`` (``"efficient_probing"``, ``"linear_probing"``, or ``"attentive_probing"`` for every baseline and every
pooling a user registers). Everything that needs a kind reads it here, through :func:`probe_kind`, so an unknown
name fails in one place with the list of the known ones. Like `peft`'s ``register_peft_method``, a new kind is one
call: :func:`register_probe_kind`, or the decorator :func:`register_pooling` for an attentive probe.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Pooling

ATTENTIVE_CONFIG_TYPE = "attentive_probing"


@dataclass(frozen=True)
class ProbeKind:
    """One probe kind: its name, its pooling, and the ``model_type`` of the config class that configures it."""

    name: str
    pooling: type[Pooling]
    config_type: str = ATTENTIVE_CONFIG_TYPE

    @property
    def is_attentive(self) -> bool:
        """Configured by ``AttentiveProbingConfig(pooler_type=name, pooler_kwargs=...)``."""
        return self.config_type == ATTENTIVE_CONFIG_TYPE


PROBE_KINDS: dict[str, ProbeKind] = {}


def register_probe_kind(name: str, pooling: type[Pooling], config_type: str = ATTENTIVE_CONFIG_TYPE) -> ProbeKind:
    """Register probe kind ``name``, computed by ``pooling`` and configured by the config of ``config_type``."""
    if not (isinstance(pooling, type) and issubclass(pooling, Pooling)):
        raise TypeError(f"register_pooling({name!r}) takes a subclass of Pooling, got {pooling!r}.")
    if name in PROBE_KINDS:
        raise ValueError(
            f"A pooling is already registered as {name!r} ({PROBE_KINDS[name].pooling.__name__}); pick another name."
        )
    PROBE_KINDS[name] = kind = ProbeKind(name, pooling, config_type)
    return kind


def register_pooling(name: str):
    """Class decorator registering a :class:`Pooling` subclass as the attentive probe kind ``name`` (configured by
    ``AttentiveProbingConfig(pooler_type=name, pooler_kwargs=...)``)."""

    def register(pooling: type[Pooling]) -> type[Pooling]:
        register_probe_kind(name, pooling)
        return pooling

    return register


def probe_kind(name: str) -> ProbeKind:
    """The registered kind ``name``; an unknown name is an error that lists the known ones."""
    if name not in PROBE_KINDS:
        raise ValueError(f"Unknown probe {name!r}; choose one of {sorted(PROBE_KINDS)}.")
    return PROBE_KINDS[name]


def attentive_kinds() -> tuple[str, ...]:
    """Every registered kind configured by the attentive config (the paper's baselines first, then any a user
    registered)."""
    return tuple(name for name, kind in PROBE_KINDS.items() if kind.is_attentive)


def build_pooling(name: str, hidden_size: int, **kwargs) -> Pooling:
    """The pooling of kind ``name`` for tokens of width ``hidden_size``."""
    return probe_kind(name).pooling(hidden_size, **kwargs)
