"""YAML presets of the skeleton methods (``sjepa_<preset>.yaml``)."""
