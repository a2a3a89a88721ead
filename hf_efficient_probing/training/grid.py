"""A grid of probes trained together in one `Trainer` run, each chosen at its best epoch on data held out from train.

The backbone is by far the costly part of probing; the probes are tiny. So, like DINOv2's linear evaluation, every
member of a grid (probe kind x layer x learning rate) reads the same batch of tokens (one cached row, or one
backbone pass that returns every layer asked for) and takes its own view of it. Their losses are summed, but their
parameters are disjoint, so no gradient mixes: each member gets exactly what it would get trained alone with the
same seed. Each member has its own optimizer parameter group (its own learning rate and state, scheduled by the
same warm-up + cosine factor) and its own metrics.

During training the members are evaluated every epoch on the *selection* split (held out from train); each member's
best epoch is snapshotted into the model's own state (``best_heads``, ``best_accuracy``, ``best_epoch``, filled by
`training.selection.GridSelection`), so the snapshots are in every checkpoint and survive a resume. The evaluation
split is read once, after training, by the chosen member of each probe kind at its chosen epoch
(`training.engine.train_grid`).

Members train between their ``started_step`` and ``stopped_step`` (buffers, in every checkpoint): a reserve member
waits (-1) until a rung starts it, a member out of contention stops at a rung (`training.rungs`). Only the members
training now take part in the forward pass, so a stopped or waiting one gets no gradient, hence no optimizer step
(its weights, optimizer state and snapshot stay as they are), and is not scored.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from safetensors.torch import save
from torch import nn
from transformers import set_seed

from ..atomic import atomic_write_bytes
from ..backbones import TokenReader
from ..cache.layout import TokenLayout
from ..modeling_probing import AutoModelForEfficientProbing, flatten_clips, mean_over_clips
from ..probes.counting import count_trainable_parameters


@dataclass(frozen=True)
class GridMember:
    """One probe of a grid: its kind, the hidden state it reads (non-negative index), its peak learning rate, and
    config fields of its own (``(("num_queries", 4),)``; the kind's common fields are given to the grid).
    ``reserve``: a rate beyond the edge of the grid, idle until a rung starts it (`training.rungs`).
    ``seed``: the seed of its head's initialisation and of its own order of the training rows (`SeedStreams`);
    ``None``: the grid's seed and the Trainer's order, as a run without ``--seeds``."""

    kind: str
    layer: int
    learning_rate: float
    settings: tuple[tuple[str, object], ...] = ()
    reserve: bool = False
    seed: int | None = None

    @property
    def name(self) -> str:
        own = "".join(f"_{key}{value}" for key, value in self.settings)
        seed = "" if self.seed is None else f"_seed{self.seed}"
        return f"{self.kind}{own}_layer{self.layer}_lr{self.learning_rate:.2e}{seed}"

    @property
    def setting(self) -> GridMember:
        """What selection chooses among: this member without its seed (the same for every seed of it)."""
        return replace(self, seed=None)


def grid_members(kinds: Sequence[str], layers: Sequence[int], learning_rates: Sequence[float]) -> list[GridMember]:
    """Every (kind, layer, learning rate), in that order of nesting."""
    return [GridMember(kind, layer, lr) for kind in kinds for layer in layers for lr in learning_rates]


def seeded_members(members: Sequence[GridMember], seeds: Sequence[int] | None) -> list[GridMember]:
    """Every member under each of ``seeds`` (innermost); ``members`` unchanged when ``seeds`` is ``None``."""
    if seeds is None:
        return list(members)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must list distinct seeds, at least one; got {list(seeds)}.")
    return [replace(member, seed=seed) for member in members for seed in seeds]


class ProbingGridModel(nn.Module):
    """K probing models on one frozen backbone, trained as one model.

    The members are normal probe models of this library that share the backbone object; only their heads are
    registered here (with the backbone once), so a checkpoint holds every head, every best-epoch snapshot and no
    backbone weights. ``forward(tokens | pixel_values, labels)`` returns the summed loss and ``logits`` of shape
    ``[B, K, num_labels]``.
    """

    accepts_loss_kwargs = False  # the loss is a sum of per-member means: no token-count normalisation

    def __init__(self, members: Sequence[GridMember], models: Sequence[nn.Module]):
        super().__init__()
        if not members or len(members) != len(models):
            raise ValueError(f"A grid needs one model per member; got {len(members)} members, {len(models)} models.")
        names = [member.name for member in members]
        if len(set(names)) != len(names):
            raise ValueError(f"Grid members must differ (kind, layer or learning rate); got {names}.")
        norms = {model.token_reader.apply_final_norm for model in models}
        if len(norms) > 1:
            raise ValueError(
                "The grid's probes disagree on apply_final_norm, but they read one stream of tokens (before or after "
                "the final norm): train each group in its own run."
            )
        self.members = list(members)
        seeds = [member.seed for member in members]
        if len(set(seed is None for seed in seeds)) > 1:
            raise ValueError("Either every grid member has a seed (--seeds) or none has.")
        # one stream of training rows per seed (`SeedStreams`); a grid without seeds reads the Trainer's batches
        self.seeds: list[int] = [] if seeds[0] is None else list(dict.fromkeys(seeds))
        self._models = list(models)  # not registered: they all hold the backbone
        self.backbone = models[0].backbone
        self.heads = nn.ModuleList(model.probe for model in models)
        self.best_heads = nn.ModuleList(copy.deepcopy(model.probe).requires_grad_(False) for model in models)
        self.register_buffer("best_accuracy", torch.full((len(models),), -1.0))
        self.register_buffer("best_epoch", torch.full((len(models),), -1.0))
        self.register_buffer("started_step", torch.tensor([-1 if m.reserve else 0 for m in members], dtype=torch.long))
        self.register_buffer("stopped_step", torch.full((len(models),), -1, dtype=torch.long))
        layers = sorted({layer for model in models for layer in model.token_reader.layers})
        reads_cls = any(model.config.reads_cls_token for model in models)
        self.token_selection = "all" if reads_cls else "patch"
        config = models[0].config
        self.reader = TokenReader(
            config.backbone_config, layers, self.token_selection, norms.pop(), frame_by_frame=config.reads_frames
        )
        self.layout = TokenLayout(tuple(layers), self.reader.layer_width, int(reads_cls), self.reader.num_hidden_layers)
        self.views = [
            (self.layout.view_index(model.config.feature_layers), model.config.reads_cls_token) for model in models
        ]
        # Members that read the same view of the same seed's rows with the same kind of pooling are pooled together
        # (one larger computation)
        self.pooling_groups: dict[tuple, list[int]] = {}
        for index, (member, model) in enumerate(zip(members, models, strict=True)):
            stream = self.seeds.index(member.seed) if self.seeds else None
            key = (stream, model.token_reader.layers, model.config.reads_cls_token, type(model.probe.pooling))
            self.pooling_groups.setdefault(key, []).append(index)

    @classmethod
    def from_backbone(
        cls,
        backbone,
        members: Sequence[GridMember],
        seed: int = 0,
        kind_kwargs: dict[str, dict] | None = None,
        **config_kwargs,
    ) -> ProbingGridModel:
        """The grid's probe models on ``backbone``; every member is initialised from its own seed (``seed`` when it
        has none), exactly as a probe built alone after ``set_seed`` of that seed. ``kind_kwargs[kind]`` are config fields of that kind only (``num_queries``,
        ``features``, ...); ``config_kwargs`` go to every member (``num_labels``, ``id2label``, ...)."""
        models = []
        for member in members:
            set_seed(seed if member.seed is None else member.seed)
            models.append(
                AutoModelForEfficientProbing.from_backbone(
                    backbone,
                    probe=member.kind,
                    feature_layers=[member.layer],
                    **{**(kind_kwargs or {}).get(member.kind, {}), **dict(member.settings)},
                    **config_kwargs,
                )
            )
        return cls(members, models)

    def best_member(self, index: int) -> nn.Module:
        """Member ``index`` as a standalone probe model (sharing the backbone) with its best epoch's weights loaded
        into its head: call it once training is over."""
        model = self._models[index]
        model.probe.load_state_dict(self.best_heads[index].state_dict())
        return model.eval()

    @property
    def member_models(self) -> list[nn.Module]:
        """The members' probe models (sharing the backbone), in member order."""
        return list(self._models)

    def member_dataset(self, index: int, dataset):
        """``dataset`` as member ``index`` reads it alone: cached grid tokens cut to its view; images unchanged (a
        stream of images, `training.streaming`, as it is)."""
        if isinstance(dataset, torch.utils.data.IterableDataset):
            return dataset
        return _MemberView(dataset, self.layout, *self.views[index])

    def training_dataset(self, dataset, data_seed: int):
        """The rows the grid trains on: ``dataset`` as is without seeds; with seeds, each seed's own order of it
        (`SeedStreams`, the Trainer's order itself for ``data_seed``, the Trainer's seed)."""
        return SeedStreams(dataset, self.seeds, data_seed) if self.seeds else dataset

    def member_config(self, index: int):
        return self._models[index].config

    def training_mask(self) -> list[bool]:
        """Which members train now: started, and not stopped."""
        return ((self.started_step >= 0) & (self.stopped_step < 0)).tolist()

    def waiting_mask(self) -> list[bool]:
        """Which members wait for a rung to start them (reserves beyond the grid's edge)."""
        return (self.started_step < 0).tolist()

    def from_start_mask(self) -> list[bool]:
        """Which members have trained since the first step."""
        return (self.started_step == 0).tolist()

    def stop_members(self, indices: Sequence[int], step: int) -> None:
        """Stop training members ``indices`` after optimizer step ``step``; their snapshots stay."""
        self.stopped_step[list(indices)] = step

    def start_members(self, indices: Sequence[int], step: int) -> None:
        """Start the waiting members ``indices`` after optimizer step ``step``."""
        self.started_step[list(indices)] = step

    def first_step(self, index: int) -> int:
        """The optimizer step member ``index`` started after (0: the run's start; -1: not yet): its schedule's
        origin (`recipes.warmup_cosine_schedule`)."""
        return int(self.started_step[index])

    def training_names(self) -> list[str]:
        """The members training now, in member order: the columns of ``forward``'s logits."""
        return [member.name for member, alive in zip(self.members, self.training_mask(), strict=True) if alive]

    def forward(self, tokens=None, pixel_values=None, labels=None, **kwargs) -> dict[str, torch.Tensor]:
        """The summed loss of the members training now and their ``logits`` ``[B, K_training, num_labels]`` (member
        order); the others are not computed. A batch of `SeedStreams` (``tokens`` ``[B, S, N, C]``, ``pixel_values``
        ``[B, S, 3, H, W]``, ``labels`` ``[B, S]``) gives each seed's members their own rows; any other batch is read
        by every member. Videos given as several clips each (``[B, clips, ...]`` tokens or clips) are classified by
        the mean of their clips' logits."""
        grid_size, clips = None, None
        if not self.seeds:  # with seeds an extra axis is the seeds' (`SeedStreams`); the job refuses seeds on videos
            if tokens is not None:
                tokens, clips = flatten_clips(tokens, 3)
            elif pixel_values is not None and self.reader.reads_clips:
                pixel_values, clips = flatten_clips(pixel_values, 5)
        if tokens is None:
            if pixel_values is None:
                raise ValueError("Pass either pixel_values (images) or tokens (e.g. from a token cache).")
            streamed = bool(self.seeds) and pixel_values.dim() == 5
            with torch.no_grad():  # every seed's images in one backbone pass
                read = self.reader(self.backbone, pixel_values.flatten(0, 1) if streamed else pixel_values)
            tokens, grid_size = read.tokens, read.grid_size
            if streamed:
                tokens = tokens.unflatten(0, pixel_values.shape[:2])
        streamed = bool(self.seeds) and tokens.dim() == 4
        tokens = tokens.to(self.heads[0].classifier.weight.dtype)  # once, for every member's view
        logits, loss, views = [None] * len(self._models), None, {}
        training = self.training_mask()
        for (stream, layers, reads_cls, _), group in self.pooling_groups.items():
            group = [index for index in group if training[index]]
            if not group:
                continue
            rows = stream if streamed else None
            if (rows, layers, reads_cls) not in views:
                source = tokens[:, rows] if streamed else tokens
                views[rows, layers, reads_cls] = self.layout.view(
                    source, self.views[group[0]][0], reads_cls
                ).contiguous()
            view = views[rows, layers, reads_cls]
            num_prefix, view_grid = self._models[group[0]].token_layout(view, grid_size)
            poolings = [self.heads[index].pooling for index in group]
            pooled = type(poolings[0]).pool_together(poolings, view, num_prefix, view_grid)
            for index, output in zip(group, pooled, strict=True):
                model = self._models[index]
                logits[index] = mean_over_clips(model.probe.classify(output).logits, clips)
                if labels is not None:
                    targets = labels[:, rows] if streamed else labels
                    member_loss = model.loss_function(targets, logits[index], model.config)
                    loss = member_loss if loss is None else loss + member_loss
        return {"loss": loss, "logits": torch.stack([logit for logit in logits if logit is not None], dim=1)}

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout or BatchNorm updates
        self.best_heads.eval()
        return self

    def save_pretrained(self, save_directory, state_dict=None, **_) -> None:
        """A checkpoint of the grid: heads, best-epoch snapshots and their scores (``model.safetensors``; no
        backbone). The Trainer loads it back by parameter name when it resumes."""
        os.makedirs(save_directory, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        tensors = {key: value.detach().contiguous() for key, value in state.items() if not key.startswith("backbone.")}
        atomic_write_bytes(os.path.join(save_directory, "model.safetensors"), save(tensors, metadata={"format": "pt"}))

    def parameter_groups(self, learning_rates: Sequence[float] | None = None, weight_decay: float = 0.0) -> list[dict]:
        """One optimizer group per member: its head's trainable parameters at its own learning rate."""
        rates = learning_rates or [member.learning_rate for member in self.members]
        return [
            {"params": [p for p in head.parameters() if p.requires_grad], "lr": rate, "weight_decay": weight_decay}
            for head, rate in zip(self.heads, rates, strict=True)
        ]

    def metric_names(self) -> list[str]:
        return [member.name for member in self.members]

    def estimated_training_bytes(self, batch_size: int, num_tokens: int) -> int:
        """A rough upper estimate of training memory: per member, weights, gradients, two AdamW moments and the
        snapshot (5 float32 copies), and activations of about ``ACTIVATION_COPIES`` float32 copies of its view of
        the batch; plus the batch itself."""
        params = sum(count_trainable_parameters(head) for head in self.heads)
        width = self.layout.hidden_size
        views = sum(width * (len(model.config.feature_layers)) for model in self._models)
        batch = batch_size * num_tokens * width * len(self.layout.feature_layers) * 4
        return 5 * 4 * params + batch_size * num_tokens * views * 4 * ACTIVATION_COPIES + batch


ACTIVATION_COPIES = 6


class SeedStreams(torch.utils.data.Dataset):
    """The training rows of a grid with seeds: item ``i`` holds, for each seed, row ``order[seed][i]`` of
    ``dataset`` (stacked: ``tokens`` ``[S, N, C]`` or ``pixel_values`` ``[S, 3, H, W]``, ``labels`` ``[S]``, or
    ``[S, num_labels]`` multi-hot vectors).

    Every seed's order is a fixed permutation of the rows, drawn from the seed, composed with the Trainer's shuffle
    of every epoch: each seed reads its own batches (other images together, other images left out by the dropped
    last batch), not the same batches reordered, which would change nothing (a batch's mean loss, and BatchNorm's
    statistics, do not depend on the order of its rows). The seed equal to ``data_seed`` (the Trainer's) reads the
    rows as they are, so ``--seeds S`` with ``--seed S`` trains the same members as a run without ``--seeds``, and a
    member's training depends on its own seed and the Trainer's only: the same in any list of seeds. The rows are
    read once per seed (the backbone pass or the cache stays shared; from the cache that is a copy per seed)."""

    def __init__(self, dataset, seeds: Sequence[int], data_seed: int):
        self.dataset, self.seeds = dataset, list(seeds)
        self.orders = [seed_order(len(dataset), seed, data_seed) for seed in self.seeds]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        items = [self.dataset[int(order[index])] for order in self.orders]
        key = "tokens" if "tokens" in items[0] else "pixel_values"
        return {
            key: torch.stack([torch.as_tensor(item[key]) for item in items]),
            "labels": torch.stack([torch.as_tensor(item["labels"]) for item in items]),  # [S] or multi-hot [S, C]
        }


def seed_order(rows: int, seed: int, data_seed: int) -> torch.Tensor:
    """The fixed permutation of ``rows`` that seed ``seed`` reads the Trainer's order through (the identity for
    ``data_seed``)."""
    if seed == data_seed:
        return torch.arange(rows)
    return torch.randperm(rows, generator=torch.Generator().manual_seed(seed))


class _MemberView(torch.utils.data.Dataset):
    def __init__(self, dataset, layout: TokenLayout, channels, reads_cls_token: bool):
        self.dataset, self.layout, self.channels, self.reads_cls_token = dataset, layout, channels, reads_cls_token

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        if "tokens" not in item:
            return item
        tokens = self.layout.view(item["tokens"][None], self.channels, self.reads_cls_token)[0]
        return {**item, "tokens": tokens}


def available_memory_bytes(device: torch.device) -> int:
    """Free memory of ``device``: the accelerator's free memory, or the host's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_grid_fits(grid: ProbingGridModel, batch_size: int, num_tokens: int, device: torch.device) -> None:
    """Fail before training when the grid would not fit in memory, with the estimate and what to change."""
    needed, free = grid.estimated_training_bytes(batch_size, num_tokens), available_memory_bytes(device)
    if needed > free:
        raise MemoryError(
            f"The grid of {len(grid.members)} probes needs about {needed / 2**30:.1f} GiB to train at batch {batch_size} "
            f"({num_tokens} tokens per image), more than the {free / 2**30:.1f} GiB free on {device}. Lower "
            "--per_device_train_batch_size, or train fewer members: fewer --learning_rates, --feature_layers or "
            "--probe kinds."
        )
