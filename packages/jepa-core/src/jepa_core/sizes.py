"""ViT sizes by name: one resolver for the ``model.encoder`` / ``embed_dim`` / ``depth`` /
``num_heads`` / ``mlp_ratio`` fields every method config has, and its inverse (the name of a
size, used when a checkpoint's shapes are turned back into a config).

A size table maps a name to ``(embed_dim, depth, num_heads, mlp_ratio)``, e.g.
:data:`jepa_core.nn.VIT_SIZES` (the official tables of the upstream
``src/models/vision_transformer.py`` files).
"""

from __future__ import annotations

from collections.abc import Mapping

from jepa_core.config import ConfigError

CUSTOM = "custom"

SizeTable = Mapping[str, tuple[int, int, int, float]]


def resolve_vit_size(
    name: str,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    mlp_ratio: float | None = None,
    table: SizeTable | None = None,
    what: str = "model.encoder",
) -> tuple[int, int, int, float]:
    """``(embed_dim, depth, num_heads, mlp_ratio)`` of the size ``name`` of ``table``, each
    overridden by the matching argument when given; ``name="custom"`` takes the three required
    fields from the arguments (``mlp_ratio`` defaults to 4.0).

    Raises :class:`jepa_core.config.ConfigError` (a ``ValueError``) naming the fix.
    """
    if table is None:
        from jepa_core.nn import VIT_SIZES

        table = VIT_SIZES
    if name == CUSTOM:
        if None in (embed_dim, depth, num_heads):
            raise ConfigError(f"{what}=custom needs model.embed_dim, model.depth and model.num_heads")
        return int(embed_dim), int(depth), int(num_heads), float(mlp_ratio or 4.0)  # type: ignore[arg-type]
    if name not in table:
        raise ConfigError(f"unknown {what} {name!r}; valid: {', '.join(table)}, {CUSTOM}")
    dim, d, heads, ratio = table[name]
    return embed_dim or dim, depth or d, num_heads or heads, mlp_ratio or ratio


def check_heads_divide(prefix: str, *widths: tuple[int, int, str, str]) -> None:
    """Raise :class:`jepa_core.config.ConfigError` unless each ``(width, heads, width_key,
    heads_key)`` has ``heads`` dividing ``width`` (each attention head gets ``width / heads``
    channels); the message names ``prefix.heads_key`` and a divisor that works."""
    for width, n, wkey, hkey in widths:
        if width % n:
            divisor = max(d for d in range(1, min(n, width) + 1) if width % d == 0)
            raise ConfigError(f"{prefix}.{hkey}={n} does not divide {prefix}.{wkey}={width} (each head gets "
                              f"{wkey} / {hkey} channels); pick a divisor, e.g. {prefix}.{hkey}={divisor}")


def vit_size_name(
    embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, table: SizeTable | None = None
) -> str | None:
    """The name of the size of ``table`` with exactly these four values, or None."""
    if table is None:
        from jepa_core.nn import VIT_SIZES

        table = VIT_SIZES
    for name, size in table.items():
        if tuple(size) == (embed_dim, depth, num_heads, mlp_ratio):
            return name
    return None


def config_num_heads(model: Mapping, table: SizeTable | None = None) -> int | None:
    """The encoder head count of a (dict) ``model`` config section, named size or custom; None
    if it cannot be told (e.g. a run config of another layout)."""
    try:
        return resolve_vit_size(model.get("encoder") or CUSTOM, model.get("embed_dim"), model.get("depth"),
                                model.get("num_heads"), model.get("mlp_ratio"), table)[2]
    except ValueError:
        return model.get("num_heads")
