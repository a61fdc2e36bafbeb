"""Weight files read into a model's backbone: keras.applications ImageNet files.

    import deeplab
    model = deeplab.build_model(backbone="resnet101", num_classes=21)
    deeplab.load_imagenet_backbone(model, "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5")

Which ``keras.applications`` class reads a backbone's file is its registry entry's
``keras_application`` (``deeplab.model.backbones.BACKBONES``). The authors' released models
(TFLite files, TF1 checkpoints) are read by ``deeplab.export.official``.
"""

import os

import keras

from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.model import backbones


def _resnet_depth_in_file(path):
    """Depth of the ResNet-v1 whose weights ``path`` holds, or None if it cannot tell.

    Keras 3 ``.weights.h5`` files name layers by class ("conv2d_52"), not by role, so the
    depth is read from the number of arrays: every convolution has a kernel and a bias and
    is followed by a BN with 4 arrays, and a ResNet-v1 of depth d has d + 3 convolutions
    (the 4 projection shortcuts, minus the classifier absent from ``notop`` files).
    """
    try:
        # h5py: only to inspect a weights file, and without it the depth is unknown (None)
        import h5py  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    arrays = []
    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(
                lambda name, item: arrays.append(name) if isinstance(item, h5py.Dataset) else None
            )
    except OSError:
        return None
    if not arrays or len(arrays) % 6:
        return None
    return len(arrays) // 6 - 3


def _application(backbone_name):
    """(registry entry, description, constructor) of the keras.applications model whose
    ImageNet files fit backbone ``backbone_name``."""
    spec = backbones.BACKBONES.get(backbone_name)
    if spec is not None and spec.family == "mobilenet_v2" and spec.divisible_by != 8:
        raise ConfigError(
            f"{backbone_name} rounds channels like the authors' DeepLab, not "
            "like keras.applications.MobileNetV2, whose ImageNet files "
            "therefore do not fit it; use --backbone=mobilenet_v2"
        )
    if spec is None or spec.keras_application is None:
        fitting = [name for name, s in backbones.BACKBONES.items() if s.keras_application]
        raise ConfigError(
            f"load_imagenet_backbone needs a DeepLabV3 model with a {' / '.join(fitting)} "
            f"backbone, not {backbone_name!r}"
        )
    application = getattr(keras.applications, spec.keras_application)
    if spec.family == "mobilenet_v2":
        alpha = spec.depth_multiplier
        return (
            spec,
            f"MobileNetV2 (alpha={alpha})",
            lambda **kwargs: application(alpha=alpha, **kwargs),
        )
    return spec, f"ResNet-{spec.depth}", application


def load_imagenet_backbone(model, path):
    """Loads a keras.applications ImageNet weight file into ``model``'s backbone.

    ResNet50/101 backbones take any file that ``keras.applications.ResNet50/101(weights=path,
    include_top=False)`` accepts (the legacy ``*_notop.h5`` files Keras downloads and
    ``.weights.h5`` files alike); MobileNetV2 backbones take the ``MobileNetV2`` files of the
    same depth multiplier (its final 1x1 ``Conv_1`` is not part of DeepLab's backbone and is
    left out). Block5-7 and the head keep their initialization.

    Args:
      model: a ``deeplab.model.deeplabv3.DeepLabV3``.
      path: the weight file.

    Returns:
      The number of backbone layers whose weights were loaded.

    Raises:
      ConfigError: the model's backbone has no keras.applications ImageNet file.
      UserError: the file is missing, unreadable, or holds another ResNet depth.
    """
    backbone_name = getattr(model, "backbone", None)
    spec, description, application = _application(backbone_name)
    if not os.path.isfile(path):
        raise UserError(f"ImageNet weight file not found: {path}")
    if spec.family == "resnet":
        file_depth = _resnet_depth_in_file(path)
        if file_depth is not None and file_depth != spec.depth:
            raise UserError(
                f"{path} holds ResNet-{file_depth} weights but the model's backbone is "
                f"resnet{spec.depth}: pass --backbone=resnet{file_depth} or a "
                f"ResNet-{spec.depth} file"
            )
    try:
        reference = application(weights=path, include_top=False, input_shape=(None, None, 3))
    except Exception as error:  # keras raises several types for a foreign file
        raise UserError(
            f"cannot load {path} as {description} ImageNet weights (keras.applications): {error}"
        ) from error
    target = model.backbone_model
    target_names = {layer.name for layer in target.layers}
    loaded = 0
    for layer in reference.layers:
        weights = layer.get_weights()
        if weights and layer.name in target_names:
            target.get_layer(layer.name).set_weights(weights)
            loaded += 1
        elif weights and not layer.name.startswith("Conv_1"):
            raise UserError(
                f"{path}: layer {layer.name} of {description} has no place in "
                f"the {backbone_name} backbone"
            )
    return loaded


__all__ = ["load_imagenet_backbone"]
