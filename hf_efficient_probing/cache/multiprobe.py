"""Many probes trained on one stream of backbone tokens, like DINOv2's grid of linear heads.

The backbone is by far the costly part of probing; the probes are tiny. So a sweep over probe kinds, query counts,
output reductions, learning rates and layers reads each batch of tokens once (from the cache, or from one backbone
pass that returns every layer asked for) and steps every probe on it. Each probe is a normal probing model (sharing
the one frozen backbone object) with its own optimizer, schedule, metrics and best epoch, and is saved as a normal
probe directory that ``from_pretrained`` loads.

A probe trained with others gets exactly what it would get alone with the same seeds: its initial weights come from
its own seed, the batch order from the data seed alone (:func:`~.streams.epoch_order`), and any randomness inside
its forward pass from its own RNG state, swapped in around its step.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..backbones import backbone_family, backbone_states, build_backbone, vision_config
from ..configuration_probing import ProbingConfig
from ..modeling_probing import probe_class_for
from ..probes.counting import count_trainable_parameters
from .key import normalize_layers
from .layout import TokenLayout
from .streams import CachedTokens, LiveTokens, epoch_order

OptimizerFactory = Callable[[list[nn.Parameter], float, float], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


@dataclass
class ProbeSpec:
    """One probe of a sweep: its config (kind, queries, d_out, layers, tokens) and its optimisation settings."""

    name: str
    config: ProbingConfig
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0


@dataclass
class ProbeResult:
    name: str
    parameters: int
    best_top1: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    path: str | None = None


def adamw(params, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)


def cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))


def _final_norm(config: ProbingConfig) -> bool:
    """Whether a probe reads tokens after the final norm (``apply_final_norm=None`` means the family's default)."""
    if config.apply_final_norm is not None:
        return config.apply_final_norm
    return backbone_family(vision_config(config.backbone_config)).apply_final_norm


def _stream_final_norm(stream) -> bool:
    if isinstance(stream, CachedTokens):
        return bool(stream.dataset.cache.key["apply_final_norm"])
    return bool(stream.reader.apply_final_norm)


def stream_requirements(specs: Sequence[ProbeSpec]) -> tuple[list[int], str]:
    """The layers (sorted, non-negative) and token selection a stream must hold to feed every probe in ``specs``."""
    layers = set()
    for spec in specs:
        num_layers = len(backbone_states(spec.config.backbone_config)) - 1
        layers.update(normalize_layers(spec.config.feature_layers, num_layers))
    selection = "all" if any(spec.config.reads_cls_token for spec in specs) else "patch"
    return sorted(layers), selection


class _Probe:
    """A probing model in training, with its own optimizer, schedule, RNG state, view of the tokens and best epoch."""

    def __init__(
        self,
        spec: ProbeSpec,
        backbone: nn.Module,
        layout: TokenLayout,
        optimizer: OptimizerFactory,
        steps: int,
        scheduler: SchedulerFactory,
    ):
        self.spec = spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            self.model = probe_class_for(spec.config)(spec.config, backbone=backbone)
            self.rng_state = torch.get_rng_state()
        self.channels = layout.view_index(spec.config.feature_layers)
        self.reads_cls_token = spec.config.reads_cls_token
        layout.check_view(self.reads_cls_token)
        params = [p for p in self.model.probe.parameters() if p.requires_grad]
        self.optimizer = optimizer(params, spec.learning_rate, spec.weight_decay)
        self.scheduler = scheduler(self.optimizer, steps)
        self.result = ProbeResult(spec.name, count_trainable_parameters(self.model.probe), -1.0, -1)
        self.best_state: dict[str, torch.Tensor] | None = None

    @contextmanager
    def own_rng(self) -> Iterator[None]:
        outer = torch.get_rng_state()
        torch.set_rng_state(self.rng_state)
        try:
            yield
        finally:
            self.rng_state = torch.get_rng_state()
            torch.set_rng_state(outer)

    def step(self, tokens: torch.Tensor, labels: torch.Tensor, layout: TokenLayout) -> float:
        self.model.train()
        with self.own_rng():
            loss = self.model(tokens=layout.view(tokens, self.channels, self.reads_cls_token), labels=labels).loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
        return loss.item()


def weightless_backbone(config) -> nn.Module:
    """The backbone's modules on the meta device: no memory, for probes that only ever read cached tokens."""
    with torch.device("meta"):
        return build_backbone(copy.deepcopy(config))


def train_probes(
    specs: Sequence[ProbeSpec],
    backbone: nn.Module | None,
    train_stream,
    eval_stream=None,
    *,
    epochs: int,
    batch_size: int = 64,
    eval_batch_size: int | None = None,
    data_seed: int = 0,
    optimizer: OptimizerFactory = adamw,
    scheduler: SchedulerFactory = cosine,
    output_dir: str | os.PathLike | None = None,
) -> list[ProbeResult]:
    """Train every probe of ``specs`` on one stream of tokens; keep and save each one's best epoch.

    Args:
        backbone: the frozen backbone the probes belong to (shared, never copied). With a cached stream it is never
            run, and ``None`` puts a weightless stand-in in its place; the probes are then saved probe-only, so
            their configs must name the backbone (``backbone_name_or_path``).
        train_stream, eval_stream: token streams, :class:`~.streams.CachedTokens` or :class:`~.streams.LiveTokens`, holding every
            layer (and the [CLS] token if any probe reads it) that the probes need (:func:`stream_requirements`).
            ``eval_stream`` defaults to ``train_stream``.
        optimizer, scheduler: ``optimizer(params, learning_rate, weight_decay)`` and ``scheduler(optimizer,
            total_steps)`` build each probe's own (AdamW with cosine decay by default; pass LARS for the paper's
            recipe). The scheduler steps once per batch.
        output_dir: where ``<name>/`` (each probe's best epoch, a normal probe directory) and ``results.json`` go.

    Returns:
        One :class:`ProbeResult` per probe: trainable parameters, best top-1 (in [0, 1]) and epoch, per-epoch history.
    """
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"Probe names must be unique (they name the saved directories), got {names}.")
    norms = {_final_norm(spec.config) for spec in specs}
    if len(norms) > 1:
        raise ValueError(
            f"The probes disagree on apply_final_norm ({sorted(norms, key=str)}), but one stream holds tokens either "
            "before or after the final norm: train each group in its own run (and stream)."
        )
    eval_stream = eval_stream if eval_stream is not None else train_stream
    for stream in (train_stream, eval_stream):
        if _stream_final_norm(stream) not in norms:
            raise ValueError(
                f"The probes read tokens {'after' if norms == {True} else 'before'} the backbone's final norm, but "
                f"the {type(stream).__name__} stream holds them {'after' if _stream_final_norm(stream) else 'before'} "
                "it: build the stream (or extract the cache) with the probes' apply_final_norm."
            )
    if backbone is None:
        if any(isinstance(stream, LiveTokens) for stream in (train_stream, eval_stream)):
            raise ValueError("A live token stream runs the backbone: pass it as backbone=.")
        unnamed = [spec.name for spec in specs if not spec.config.backbone_name_or_path]
        if output_dir is not None and unnamed:
            raise ValueError(
                f"Probes {unnamed} name no backbone (backbone_name_or_path), so their checkpoints would need the "
                "backbone's weights: pass backbone=, or set backbone_name_or_path in their configs."
            )
        backbone = weightless_backbone(specs[0].config.backbone_config)
    steps = epochs * -(-len(train_stream) // batch_size)
    probes = [_Probe(spec, backbone, train_stream.layout, optimizer, steps, scheduler) for spec in specs]
    for epoch in range(epochs):
        losses = [0.0] * len(probes)
        batches = 0
        for tokens, labels in train_stream.batches(epoch_order(len(train_stream), epoch, data_seed), batch_size):
            for index, probe in enumerate(probes):
                losses[index] += probe.step(tokens, labels, train_stream.layout)
            batches += 1
        top1 = evaluate_probes(probes, eval_stream, eval_batch_size or batch_size)
        for probe, loss, accuracy in zip(probes, losses, top1, strict=True):
            probe.result.history.append({"epoch": epoch, "train_loss": loss / max(batches, 1), "top1": accuracy})
            if accuracy > probe.result.best_top1:
                probe.result.best_top1, probe.result.best_epoch = accuracy, epoch
                probe.best_state = {k: v.detach().clone() for k, v in probe.model.probe.state_dict().items()}

    for probe in probes:
        probe.model.probe.load_state_dict(probe.best_state)
        probe.model.eval()
        if output_dir is not None:
            path = Path(output_dir) / probe.spec.name
            probe.model.save_pretrained(path)
            probe.result.path = str(path)
    results = [probe.result for probe in probes]
    if output_dir is not None:
        (Path(output_dir) / "results.json").write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return results


@torch.no_grad()
def evaluate_probes(probes: Sequence[_Probe], stream, batch_size: int) -> list[float]:
    """Top-1 of every probe over one pass of ``stream``."""
    correct = [0] * len(probes)
    for probe in probes:
        probe.model.eval()
    for tokens, labels in stream.batches(range(len(stream)), batch_size):
        for index, probe in enumerate(probes):
            logits = probe.model(tokens=stream.layout.view(tokens, probe.channels, probe.reads_cls_token)).logits
            correct[index] += int((logits.argmax(-1) == labels).sum())
    return [count / len(stream) for count in correct]


def results_table(results: Sequence[ProbeResult]) -> str:
    """A Markdown table: probe, trainable parameters, best top-1 and its epoch."""
    lines = ["| probe | params | top-1 (%) | best epoch |", "|---|---:|---:|---:|"]
    for result in results:
        lines.append(f"| {result.name} | {result.parameters:,} | {100 * result.best_top1:.2f} | {result.best_epoch} |")
    return "\n".join(lines)
