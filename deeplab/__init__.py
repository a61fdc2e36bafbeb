"""DeepLabv3 ("Rethinking Atrous Convolution for Semantic Image Segmentation",
Chen et al., 2017) for TensorFlow 2 / Keras 3.

The public API is imported lazily so that ``python -m deeplab.<binary>`` and the
dataset converters do not pay for building Keras when they do not need it.
"""

import importlib

__version__ = "0.1.0"

from deeplab import _cpu  # noqa: E402  (before anything imports TensorFlow)
from deeplab import _jax_guard  # noqa: E402  (before anything imports TensorFlow)

_jax_guard.install()
_cpu.enable_onednn_by_default()

_LAZY = {
    "InferenceOptions": "deeplab.common.inference_options",
    "load": "deeplab.export.loading",
    "Segmenter": "deeplab.export.loading",
    "build_model": "deeplab.model.deeplabv3",
    "load_imagenet_backbone": "deeplab.model.weights",
    "rebuild_with_output_stride": "deeplab.model.deeplabv3",
    "atrous_plan": "deeplab.model.resnet",
    "normalize_image": "deeplab.model.preprocessing",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deeplab' has no attribute {name!r}")
