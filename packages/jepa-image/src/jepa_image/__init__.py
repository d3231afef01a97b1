"""jepa-image: image JEPAs (I-JEPA) on jepa-core."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `import jepa_image` stays light: from_pretrained & co. load torch models.
    if name in ("from_pretrained", "load_pretrained"):
        from jepa_image import pretrained

        return getattr(pretrained, name)
    raise AttributeError(f"module 'jepa_image' has no attribute {name!r}")
