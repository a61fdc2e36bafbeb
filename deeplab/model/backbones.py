"""The backbone factory: a backbone name and the model settings -> the backbone and its plan.

    from deeplab.model import backbones
    from deeplab.model.settings import ModelSettings
    backbone = backbones.build_backbone(ModelSettings(backbone="resnet50", output_stride=8))
    backbone.model   # keras.Model: normalized images -> {"stem", "block1", ..., "features"}
    backbone.plan    # its stride plan at that output stride

:data:`BACKBONES` is the registry: a name -> the spec of one backbone (its family and sizes).
A backbone of an existing family is one entry (e.g. ``"resnet152": ResNetSpec(152, 1.0,
"ResNet152")`` once ``resnet.BLOCK_UNITS`` knows depth 152); a new family is a spec class
with ``check``, ``plan`` and ``build`` (and ``keras_application`` for ImageNet files, read by
``deeplab.model.weights``). The backbone model is named after its registry name, which is the
prefix of its variables' paths in checkpoints.
"""

import collections
import dataclasses

from deeplab.common.errors import ConfigError
from deeplab.model import mobilenet
from deeplab.model import resnet

Backbone = collections.namedtuple("Backbone", ["model", "plan", "spec"])
Backbone.__doc__ = """A built backbone.

model: a keras.Model from normalized images to a dict of endpoints ("stem", "block1", ...,
  "features"), named after the backbone.
plan: its stride plan at the output stride: a list of ``resnet.BlockPlan`` (ResNet) or of
  ``(stride, depthwise rate)`` per inverted residual block (MobileNetV2).
spec: the registry entry it was built from.
"""

# The authors' MobileNetV2 BN decay (slim's mobilenet training_scope, which their
# feature_extractor.py uses for the backbone; their ASPP uses 0.9997).
MOBILENET_BATCH_NORM_MOMENTUM = 0.997


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """An atrous ResNet-v1 (``deeplab.model.resnet``) of ``depth`` and ``width_multiplier``.

    keras_application: the ``keras.applications`` class whose ImageNet files fit it, or None.
    """

    depth: int
    width_multiplier: float = 1.0
    keras_application: str | None = None
    family = "resnet"
    # None: the head's BN decay (the paper's 0.9997).
    batch_norm_momentum = None

    def check(self, settings):
        if settings.backbone_padding != "symmetric":
            raise ConfigError(
                f"--backbone_padding={settings.backbone_padding}: the ResNet backbones pad "
                "explicitly (keras.applications layout); only MobileNetV2 has the "
                "'same' option"
            )

    def plan(self, settings):
        return resnet.atrous_plan(
            settings.output_stride, settings.num_cascaded_blocks, settings.multi_grid, self.depth
        )

    def build(self, settings, batch_norm_momentum, performance):
        return resnet.build_resnet(
            depth=self.depth,
            width_multiplier=self.width_multiplier,
            output_stride=settings.output_stride,
            multi_grid=settings.multi_grid,
            num_cascaded_blocks=settings.num_cascaded_blocks,
            batch_norm_momentum=batch_norm_momentum,
            weight_decay=settings.weight_decay,
            input_shape=settings.input_shape,
            name=settings.backbone,
            performance=performance,
        )


@dataclasses.dataclass(frozen=True)
class MobileNetV2Spec:
    """The atrous MobileNetV2 (``deeplab.model.mobilenet``): the backbone of the authors'
    released mobile models (``deeplab.import_official``).

    depth_multiplier: channel multiplier. divisible_by: channel rounding (the authors round to
      multiples of 8 only at depth 1.0). keras_application: as for :class:`ResNetSpec`.
    """

    depth_multiplier: float
    divisible_by: int = 8
    keras_application: str | None = None
    family = "mobilenet_v2"
    batch_norm_momentum = MOBILENET_BATCH_NORM_MOMENTUM

    def check(self, settings):
        if settings.num_cascaded_blocks:
            raise ConfigError(
                f"--num_cascaded_blocks={settings.num_cascaded_blocks}: cascaded blocks "
                "replicate ResNet's block4; MobileNetV2 has none"
            )
        if settings.multi_grid != (1, 1, 1):
            raise ConfigError(
                f"--multi_grid={','.join(map(str, settings.multi_grid))}: multi-grid "
                f"applies to ResNet's block4; pass --multi_grid=1,1,1 with {settings.backbone}"
            )

    def plan(self, settings):
        return mobilenet.mobilenet_plan(settings.output_stride)

    def build(self, settings, batch_norm_momentum, performance):
        return mobilenet.build_mobilenet_v2(
            depth_multiplier=self.depth_multiplier,
            divisible_by=self.divisible_by,
            output_stride=settings.output_stride,
            batch_norm_momentum=batch_norm_momentum,
            weight_decay=settings.weight_decay,
            input_shape=settings.input_shape,
            padding=settings.backbone_padding,
            name=settings.backbone,
            performance=performance,
        )


# The registry. resnet14_tiny is not in the paper: it exists so that tests and the quick start
# train in minutes on a CPU.
BACKBONES = {
    "resnet50": ResNetSpec(50, 1.0, "ResNet50"),
    "resnet101": ResNetSpec(101, 1.0, "ResNet101"),
    "resnet14_tiny": ResNetSpec(14, 0.25),
    "mobilenet_v2": MobileNetV2Spec(1.0, 8, "MobileNetV2"),
    "mobilenet_v2_dm05": MobileNetV2Spec(0.5, 1),
}
BACKBONE_NAMES = tuple(BACKBONES)
# name -> (depth multiplier, channel rounding) of the MobileNetV2 backbones (the table
# deeplab.export.official matches the authors' files against).
MOBILENET_BACKBONES = {
    name: (spec.depth_multiplier, spec.divisible_by)
    for name, spec in BACKBONES.items()
    if spec.family == "mobilenet_v2"
}


def get(name):
    """The registry entry of backbone ``name``.

    Raises:
      ConfigError: no backbone has that name.
    """
    if name not in BACKBONES:
        raise ConfigError(f"--backbone={name!r}: choose one of {sorted(BACKBONE_NAMES)}")
    return BACKBONES[name]


def resolve_backbone_momentum(backbone, batch_norm_momentum, backbone_batch_norm_momentum=0.0):
    """The backbone's BN decay: ``backbone_batch_norm_momentum`` when set (non-zero), else the
    backbone's own (0.997 for MobileNetV2) or ``batch_norm_momentum`` (ResNet)."""
    if backbone_batch_norm_momentum:
        return float(backbone_batch_norm_momentum)
    own = BACKBONES[backbone].batch_norm_momentum if backbone in BACKBONES else None
    return float(batch_norm_momentum if own is None else own)


def check_backbone(settings):
    """Raises ConfigError if ``settings`` (a ``ModelSettings``) name no backbone or settings it
    does not have."""
    get(settings.backbone).check(settings)


def stride_plan(settings):
    """The stride plan of ``settings``' backbone at their output stride (see :data:`Backbone`)."""
    spec = get(settings.backbone)
    try:
        return spec.plan(settings)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def build_backbone(settings, performance=None):
    """Builds the backbone ``settings`` (a ``deeplab.model.settings.ModelSettings``) name.

    The backbone reads ``backbone``, ``output_stride``, ``multi_grid``,
    ``num_cascaded_blocks``, ``batch_norm_momentum`` / ``backbone_batch_norm_momentum``,
    ``weight_decay``, ``backbone_padding`` and ``input_shape``.

    Args:
      settings: the model settings.
      performance: a ``deeplab.model.options.PerformanceOptions`` (None: the defaults).

    Returns:
      A :data:`Backbone` ``(model, plan, spec)``.

    Raises:
      ConfigError: an unknown backbone, or settings it cannot be built with (the message
        names the flag).
    """
    spec = get(settings.backbone)
    spec.check(settings)
    momentum = resolve_backbone_momentum(
        settings.backbone, settings.batch_norm_momentum, settings.backbone_batch_norm_momentum
    )
    try:
        plan = spec.plan(settings)
        model = spec.build(settings, momentum, performance)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return Backbone(model, plan, spec)


__all__ = [
    "BACKBONES",
    "BACKBONE_NAMES",
    "Backbone",
    "MOBILENET_BACKBONES",
    "MobileNetV2Spec",
    "ResNetSpec",
    "build_backbone",
    "check_backbone",
    "get",
    "resolve_backbone_momentum",
    "stride_plan",
]
