"""jepa-core: the parts every Joint-Embedding Predictive Architecture shares.

Submodules: ``nn`` (ViT, predictor, position tables), ``masks``, ``target`` (EMA),
``losses``, ``schedules``, ``optim``, ``data``, ``config``, ``registry``, ``trainer``,
``checkpoint``, ``run`` and ``cli``.
"""

__version__ = "0.1.0"
