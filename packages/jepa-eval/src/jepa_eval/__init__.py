"""jepa-eval: probes for frozen encoders."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import jepa_eval` stays light.
    if name == "load_official_probe":
        from jepa_eval.official import load_official_probe

        return load_official_probe
    raise AttributeError(f"module 'jepa_eval' has no attribute {name!r}")
