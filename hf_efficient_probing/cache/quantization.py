"""How a cache stores tokens: a float type as is, or 8 bits a value with a scale per token.

An 8-bit type halves the disk (and the page cache a training run reads through) against float16/bfloat16: a token of
width ``C`` costs ``C`` bytes plus 2 (float8) or 4 (int8) bytes of float16 parameters, against ``2 C``. Each token
(a row of one layer's ``[N, C]``) is quantised on its own, so one token's large values never cost another's precision:

- ``float8``: float8 e4m3 (3 mantissa bits) of ``x / scale``, ``scale = absmax(x) / 448`` (448 is e4m3's largest
  value, and ``scale`` is rounded up so nothing overflows). Every value keeps a relative error of at most 2^-4, and
  values under 2^-6 of the scale an absolute error of at most 2^-10 scale: a token's relative error (L2) stays under
  about 2^-4, whatever its range. Suited to tokens with outlier channels.
- ``int8``: 8-bit codes ``round((x - zero) / step)`` in 0..255, ``zero = min(x)`` (rounded down) and
  ``step = (max(x) - zero) / 255`` (rounded up): every value is within ``step / 2`` of its original, a uniform grid
  over the token's range (finer than float8's for tokens without outliers, coarser with them).

The prefix tokens ([CLS], registers) stay float16 beside the 8-bit patches: a linear probe reads only the [CLS]
token, so its features would carry the whole quantisation error, at a cost of one token in ~200 (ViT-B/16).

Decoding gives float32 (the probes' compute dtype). Shards hold ``tokens.<layer>`` (the patches' codes) and, for the
8-bit types, ``scale.<layer>`` (and ``zero.<layer>``), each ``[rows, patches]`` float16, and ``prefix.<layer>``
(``[rows, prefix, C]`` float16) where the backbone has prefix tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenStorage:
    """One storage type: the dtype of its values and the float16 parameters each token carries."""

    values: torch.dtype
    parameters: tuple[str, ...] = ()

    def bytes_per_token(self, width: int) -> int:
        return width * self.values.itemsize + 2 * len(self.parameters)

    def bytes_per_row(self, num_prefix: int, num_patches: int, width: int) -> int:
        """One image's tokens of one layer: an 8-bit type's prefix tokens cost float16's 2 bytes a value."""
        if not self.quantized:
            return (num_prefix + num_patches) * self.bytes_per_token(width)
        return num_prefix * width * PARAMETER_DTYPE.itemsize + num_patches * self.bytes_per_token(width)

    @property
    def quantized(self) -> bool:
        return bool(self.parameters)


TOKEN_DTYPES = {
    "float16": TokenStorage(torch.float16),
    "bfloat16": TokenStorage(torch.bfloat16),
    "float32": TokenStorage(torch.float32),
    "float8": TokenStorage(torch.float8_e4m3fn, ("scale",)),
    "int8": TokenStorage(torch.uint8, ("scale", "zero")),
}
FLOAT8_MAX = 448.0  # the largest float8 e4m3 value
INT8_LEVELS = 255
PARAMETER_DTYPE = torch.float16


def token_storage(name: str | torch.dtype) -> TokenStorage:
    """The storage type ``name`` (or a float `torch.dtype`), with a clear error for another one."""
    return TOKEN_DTYPES[token_dtype_name(name)]


def token_dtype_name(name: str | torch.dtype) -> str:
    if isinstance(name, torch.dtype):
        name = str(name).removeprefix("torch.")
    if name not in TOKEN_DTYPES:
        raise ValueError(f"Token caches store {', '.join(TOKEN_DTYPES)} tokens, got {name!r}.")
    return name


def _float16_up(values: torch.Tensor) -> torch.Tensor:
    """``values`` as float16, rounded towards +inf (so a bound stays a bound), at least float16's smallest normal."""
    rounded = values.clamp_min(torch.finfo(PARAMETER_DTYPE).tiny).to(PARAMETER_DTYPE)
    low = rounded.float() < values
    return torch.where(low, torch.nextafter(rounded, torch.full_like(rounded, torch.inf)), rounded)


def _float16_down(values: torch.Tensor) -> torch.Tensor:
    rounded = values.to(PARAMETER_DTYPE)
    high = rounded.float() > values
    return torch.where(high, torch.nextafter(rounded, torch.full_like(rounded, -torch.inf)), rounded)


def encode(tokens: torch.Tensor, name: str, num_prefix: int = 0) -> dict[str, torch.Tensor]:
    """``tokens`` ``[..., N, C]`` in storage type ``name``: ``{"tokens": values}``, for the 8-bit types the patches'
    codes with their per-token ``"scale"`` (and ``"zero"``), each ``[..., N - num_prefix]``, and the first
    ``num_prefix`` tokens as ``"prefix"`` in float16."""
    storage = token_storage(name)
    if not storage.quantized:
        return {"tokens": tokens.to(storage.values)}
    prefix = {"prefix": tokens[..., :num_prefix, :].to(PARAMETER_DTYPE)} if num_prefix else {}
    tokens = tokens[..., num_prefix:, :].float()
    if name == "float8":
        scale = _float16_up(tokens.abs().amax(-1) / FLOAT8_MAX)
        values = (tokens / scale.float()[..., None]).clamp(-FLOAT8_MAX, FLOAT8_MAX).to(storage.values)
        return {"tokens": values, "scale": scale, **prefix}
    zero = _float16_down(tokens.amin(-1))
    step = _float16_up((tokens.amax(-1) - zero.float()) / INT8_LEVELS)
    codes = ((tokens - zero.float()[..., None]) / step.float()[..., None]).round_().clamp_(0, INT8_LEVELS)
    return {"tokens": codes.to(storage.values), "scale": step, "zero": zero, **prefix}


def decode(parts: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The tokens :func:`encode` stored: float types as stored, the 8-bit types dequantised to float32 (led by the
    float16 prefix tokens when ``parts`` holds them)."""
    if not token_storage(name).quantized:
        return parts["tokens"]
    values = parts["tokens"].float() * parts["scale"].float()[..., None]
    if "zero" in parts:
        values = values + parts["zero"].float()[..., None]
    return torch.cat((parts["prefix"].float(), values), dim=-2) if "prefix" in parts else values
