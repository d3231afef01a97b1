"""torch.hub entry points for the released JEPA weights (jepa_core.hub.list_pretrained):

    import torch
    torch.hub.list("<owner>/<repo>")                          # the names
    encoder = torch.hub.load("<owner>/<repo>", "ijepa_vith14_in1k")
    encoder = torch.hub.load("path/to/checkout", "vjepa2_vitl16", source="local")

Each entry returns the target (EMA) encoder in eval mode, built by jepa-image (I-JEPA) or
jepa-video (V-JEPA, V-JEPA 2) from the official file, downloaded once into the jepa cache
(``$JEPA_CACHE`` or ``~/.cache/jepa``). Keyword arguments go to the package's
``from_pretrained`` (``which="encoder"``, ``with_predictor=True``, ``img_size=...``, ``device=...``).
Works from an installed jepa or straight from a checkout (its packages' ``src`` folders are
put on ``sys.path``; torch, einops, numpy and pyyaml must be installed).
"""

import os as _os
import sys as _sys

dependencies = ["torch", "einops", "numpy", "yaml"]

_HERE = _os.path.dirname(_os.path.abspath(__file__))
for _pkg in ("jepa-core", "jepa-image", "jepa-video"):
    _src = _os.path.join(_HERE, "packages", _pkg, "src")
    if _os.path.isdir(_src) and _src not in _sys.path:
        _sys.path.insert(0, _src)

from jepa_core.hub import get_weights as _get_weights  # noqa: E402
from jepa_core.hub import list_pretrained as _list_pretrained  # noqa: E402


def _entry(name):
    def load(pretrained=True, **kwargs):
        if not pretrained:
            raise ValueError(f"{name}: only pretrained=True is offered; for a random init build the "
                             "architecture from a preset (jepa_image.ijepa / jepa_video.vjepa build_model)")
        method = _get_weights(name).method
        if method == "ijepa":
            from jepa_image.pretrained import from_pretrained
        else:
            from functools import partial

            from jepa_video.pretrained import from_pretrained as _fp
            from_pretrained = partial(_fp, method=method)
        return from_pretrained(name, **kwargs)

    load.__name__ = name
    load.__doc__ = f"{_get_weights(name).description} ({_method_of(name)}): the target encoder."
    return load


def _method_of(name):
    return _get_weights(name).method


for _name in _list_pretrained():
    globals()[_name] = _entry(_name)
