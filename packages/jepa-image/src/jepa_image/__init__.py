"""jepa-image: image JEPAs (I-JEPA) on jepa-core."""

__version__ = "0.1.0"
