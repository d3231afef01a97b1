"""YAML presets of the V-JEPA and V-JEPA 2 methods (``<method>_<preset>.yaml``)."""
