"""jepa-skeleton: skeleton JEPAs (S-JEPA) on jepa-core."""

__version__ = "0.1.0"

_LAZY = {
    "SJEPA": "jepa_skeleton.sjepa",
    "SJEPAConfig": "jepa_skeleton.sjepa",
    "SkeletonEncoder": "jepa_skeleton.nn",
    "SkeletonPredictor": "jepa_skeleton.nn",
}


def __getattr__(name: str):
    # Lazy, so that `import jepa_skeleton` stays light (no torch until a model is asked for).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jepa_skeleton' has no attribute {name!r}")
