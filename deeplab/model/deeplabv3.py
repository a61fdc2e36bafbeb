"""DeepLabv3: atrous ResNet backbone + ASPP or cascaded head (Sec. 3 of the paper).

    import deeplab
    model = deeplab.build_model(backbone="resnet101", num_classes=21, output_stride=16,
                                multi_grid=(1, 2, 4), atrous_rates=(6, 12, 18),
                                image_pooling=True, head="aspp", num_cascaded_blocks=0,
                                upsample_logits=True)
    deeplab.load_imagenet_backbone(model, "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5")

The model maps normalized images (``deeplab.model.preprocessing.normalize_image``) to float32
logits. Keyword names match the binaries' flag names, except ``performance``
(``deeplab.model.options.PerformanceOptions``: which kernels run), which is not part of the
model's config.
"""

import collections
import inspect
import os

import keras
from keras import layers

from deeplab.model import mobilenet
from deeplab.model import resnet
from deeplab.model.aspp import ASPP
from deeplab.model.batch_norm import BatchNormalization
from deeplab.model.decoder import ENDPOINT_FOR_STRIDE, Decoder
from deeplab.common.errors import ConfigError, UserError
from deeplab.model.layers import StrideUpsample
from deeplab.model.options import PerformanceOptions

# name -> (depth, width multiplier). resnet14_tiny is not in the paper: it exists so that
# tests and the quick start train in minutes on a CPU.
BACKBONES = {"resnet50": (50, 1.0), "resnet101": (101, 1.0), "resnet14_tiny": (14, 0.25)}
# name -> (depth multiplier, channel rounding) of the atrous MobileNetV2 (deeplab.model.mobilenet):
# the backbones of the authors' released mobile models (deeplab.import_official). The authors round
# channels to multiples of 8 only at depth 1.0.
MOBILENET_BACKBONES = {"mobilenet_v2": (1.0, 8), "mobilenet_v2_dm05": (0.5, 1)}
BACKBONE_NAMES = tuple(BACKBONES) + tuple(MOBILENET_BACKBONES)
HEADS = ("aspp", "cascade")
# The paper states the ASPP rates for output_stride 16 (Sec. 3.3).
ASPP_REFERENCE_STRIDE = 16
# Constructor keywords that are not part of the config (get_config, model_config.json): they
# choose kernels, not the function the model computes.
NON_CONFIG_KEYWORDS = ("performance",)

RecomputeSegments = collections.namedtuple("RecomputeSegments", ["front", "rest"])
RecomputeSegments.__doc__ = """A DeepLabV3 split in two at a backbone endpoint (see
:meth:`DeepLabV3.recompute_segments`).

front: a keras.Model from the images to the endpoint's features, made of the model's own layers.
rest: ``rest(features, images, training=None) -> logits``: the rest of the backbone and the head
(``images`` only sets the size the logits are upsampled to).
"""


class UnsplittableModelError(ValueError):
    """The model cannot be split at the requested endpoint (the message says why)."""


def scale_atrous_rates(atrous_rates, output_stride):
    """ASPP rates given for output_stride 16, scaled to ``output_stride`` (doubled at 8, Sec. 3.3).

    Rates are rounded half up and kept >= 1 (only output strides > 32 need rounding).
    """
    return tuple(max(1, int(r * ASPP_REFERENCE_STRIDE / output_stride + 0.5)) for r in atrous_rates)


def iter_layers(layer):
    """Yields ``layer`` and every layer nested inside it, depth first."""
    yield layer
    for sub in layer._flatten_layers(include_self=False, recursive=False):  # pylint: disable=protected-access
        yield from iter_layers(sub)


@keras.saving.register_keras_serializable(package="deeplab")
class DeepLabV3(keras.Model):
    """DeepLabv3 as a functional Keras model whose constructor arguments are its config.

    Args:
      backbone: "resnet50" or "resnet101" (ResNet-v1, keras.applications variable layout);
        "resnet14_tiny" (one unit per block, quarter width) for tests and the quick start;
        "mobilenet_v2" / "mobilenet_v2_dm05" (atrous MobileNetV2, depth multiplier 1.0 / 0.5,
        keras.applications layout: the backbone of the authors' mobile models; output stride
        4..32, no multi-grid, no cascaded blocks).
      num_classes: number of output classes (logits channels).
      output_stride: input / feature resolution, 4..256 (Sec. 3.1).
      multi_grid: unit rates of block4..block7 (Sec. 3.2.1), e.g. (1, 2, 4).
      atrous_rates: ASPP 3x3 rates stated for output_stride 16; scaled by 16/output_stride.
        Empty: the ASPP keeps its 1x1 branch (and image pooling), the head of the authors'
        MobileNetV2 models.
      image_pooling: add ASPP's image-level branch (Sec. 3.3).
      head: "aspp" (Sec. 3.3) or "cascade" (1x1 logits on the last block, Sec. 3.2).
      num_cascaded_blocks: 0..3 extra replicas of block4 (block5..block7).
      upsample_logits: bilinearly upsample logits to the input size (Sec. 4.1) with the
        stride-aware sampler of ``deeplab.model.layers.StrideUpsample`` (feature ``i`` lands on
        input pixel ``output_stride * i`` at every size and output stride; CONVENTIONS.md,
        "Geometry"); False keeps them at feature resolution (Table 8 ablation: the labels at
        the feature centres are used instead).
      batch_norm_momentum: BN statistics decay (paper: 0.9997) of the head (ASPP, decoder) and,
        unless ``backbone_batch_norm_momentum`` says otherwise, of the backbone.
      backbone_batch_norm_momentum: the backbone's BN decay; 0: the backbone's own, the
        authors' 0.997 for MobileNetV2 (slim's mobilenet training_scope) and
        ``batch_norm_momentum`` for ResNet (the paper's 0.9997; the authors' public code uses
        0.95 there, CONVENTIONS.md "BatchNorm decay").
      freeze_batch_norm: every BN layer normalizes with its moving statistics and never
        updates them (second training stage, Sec. 4.3; Table 8); gamma and beta are still
        trained, as in the authors' code (``fine_tune_batch_norm=False``).
      weight_decay: L2 decay on conv kernels, ``weight_decay * sum(w**2) / 2`` as in the
        original DeepLab code. The paper gives no value; 1e-4 is the authors' code's value for
        ResNet backbones (CONVENTIONS.md).
      aspp_filters: channels of each ASPP branch (paper: 256).
      aspp_dropout: dropout rate after the ASPP projection in training (the authors' code:
        0.1, i.e. keep_prob 0.9; the paper does not say). Changes no variable.
      decoder_output_stride: 0 (DeepLabv3) or 4 / 8: the DeepLabv3+ decoder (Chen et al.
        2018, ``deeplab.model.decoder``) fuses block1 (stride 4) or block2 (stride 8) features with
        the ASPP output and the logits are made at that stride. Not in this paper.
      decoder_separable: the decoder's 3x3 convolutions are depthwise-separable (the
        authors' default) or plain.
      logits_init_stddev: the logits kernel starts from a truncated normal of this stddev
        (the authors' 0.01, train_utils/model.py); 0: Glorot uniform (Keras' default, this
        project's before issue 34). Changes how a new head starts, never a restored one.
      backbone_padding: MobileNetV2's stride-2 layers: "symmetric" (feature ``i`` of every
        stride at pixel ``s * i`` at every size) or "same" (TensorFlow's, as in the authors'
        graphs: shifted on even sizes); identical at odd sizes such as 513
        (deeplab.model.mobilenet).
      input_shape: shape of one input image; (None, None, 3) accepts any size.
      performance: a :class:`deeplab.model.options.PerformanceOptions` (or None: its
        defaults), the kernels the layers run (fused BN training kernel, native dilated
        convolutions). Changes no variable and, up to float rounding, no result, so it is
        not in :meth:`get_config` (model_config.json); kept as ``self.performance``.
    """

    def __init__(
        self,
        *,
        backbone="resnet101",
        num_classes=21,
        output_stride=16,
        multi_grid=(1, 2, 4),
        atrous_rates=(6, 12, 18),
        image_pooling=True,
        head="aspp",
        num_cascaded_blocks=0,
        upsample_logits=True,
        batch_norm_momentum=0.9997,
        backbone_batch_norm_momentum=0.0,
        freeze_batch_norm=False,
        weight_decay=1e-4,
        aspp_filters=256,
        aspp_dropout=0.1,
        decoder_output_stride=0,
        decoder_separable=True,
        backbone_padding="symmetric",
        logits_init_stddev=0.01,
        input_shape=(None, None, 3),
        name="deeplabv3",
        performance=None,
        **kwargs,
    ):
        performance = PerformanceOptions.coerce(performance)
        if backbone not in BACKBONE_NAMES:
            raise ConfigError(f"--backbone={backbone!r}: choose one of {sorted(BACKBONE_NAMES)}")
        if head not in HEADS:
            raise ConfigError(f"--head={head!r}: choose one of {HEADS}")
        if int(num_classes) < 1:
            raise ConfigError(f"--num_classes must be positive, got {num_classes}")
        if not 0.0 <= float(aspp_dropout) < 1.0:
            raise ConfigError(f"--aspp_dropout must be in [0, 1), got {aspp_dropout}")
        if float(logits_init_stddev) < 0:
            raise ConfigError(f"--logits_init_stddev must be >= 0, got {logits_init_stddev}")
        decoder_output_stride = int(decoder_output_stride or 0)
        if decoder_output_stride and decoder_output_stride not in ENDPOINT_FOR_STRIDE:
            raise ConfigError(
                f"--decoder_output_stride={decoder_output_stride}: choose 0 (no "
                f"decoder) or one of {sorted(ENDPOINT_FOR_STRIDE)}"
            )
        if decoder_output_stride and int(output_stride) < decoder_output_stride:
            raise ConfigError(
                f"--decoder_output_stride={decoder_output_stride} is above "
                f"--output_stride={output_stride}: the decoder upsamples"
            )
        multi_grid = tuple(int(r) for r in multi_grid) if multi_grid else (1, 1, 1)
        atrous_rates = tuple(int(r) for r in atrous_rates or ())
        input_shape = tuple(input_shape)
        if backbone not in MOBILENET_BACKBONES and backbone_padding != "symmetric":
            raise ConfigError(
                f"--backbone_padding={backbone_padding}: the ResNet backbones pad "
                "explicitly (keras.applications layout); only MobileNetV2 has the "
                "'same' option"
            )
        if backbone in MOBILENET_BACKBONES:
            if num_cascaded_blocks:
                raise ConfigError(
                    f"--num_cascaded_blocks={num_cascaded_blocks}: cascaded blocks "
                    "replicate ResNet's block4; MobileNetV2 has none"
                )
            if multi_grid != (1, 1, 1):
                raise ConfigError(
                    f"--multi_grid={','.join(map(str, multi_grid))}: multi-grid "
                    f"applies to ResNet's block4; pass --multi_grid=1,1,1 with {backbone}"
                )
        backbone_momentum = resolve_backbone_momentum(
            backbone, batch_norm_momentum, backbone_batch_norm_momentum
        )
        try:
            if backbone in MOBILENET_BACKBONES:
                backbone_model = mobilenet.build_mobilenet_v2(
                    depth_multiplier=MOBILENET_BACKBONES[backbone][0],
                    divisible_by=MOBILENET_BACKBONES[backbone][1],
                    output_stride=output_stride,
                    batch_norm_momentum=backbone_momentum,
                    weight_decay=weight_decay,
                    input_shape=input_shape,
                    padding=backbone_padding,
                    name=backbone,
                    performance=performance,
                )
            else:
                depth, width = BACKBONES[backbone]
                backbone_model = resnet.build_resnet(
                    depth=depth,
                    width_multiplier=width,
                    output_stride=output_stride,
                    multi_grid=multi_grid,
                    num_cascaded_blocks=num_cascaded_blocks,
                    batch_norm_momentum=backbone_momentum,
                    weight_decay=weight_decay,
                    input_shape=input_shape,
                    name=backbone,
                    performance=performance,
                )
        except ValueError as error:
            raise ConfigError(str(error)) from error

        inputs = keras.Input(shape=input_shape, name="image")
        endpoints = backbone_model(inputs)
        features = endpoints["features"]
        if head == "aspp":
            features = ASPP(
                rates=scale_atrous_rates(atrous_rates, output_stride),
                image_pooling=image_pooling,
                filters=aspp_filters,
                batch_norm_momentum=batch_norm_momentum,
                weight_decay=weight_decay,
                dropout=aspp_dropout,
                fused_batch_norm=performance.fused_batch_norm,
                native_dilation=performance.native_dilation,
                name="aspp",
            )(features)
        if decoder_output_stride:
            features = Decoder(
                output_stride,
                decoder_output_stride,
                separable=decoder_separable,
                batch_norm_momentum=batch_norm_momentum,
                weight_decay=weight_decay,
                fused_batch_norm=performance.fused_batch_norm,
                name="decoder",
            )([features, endpoints[ENDPOINT_FOR_STRIDE[decoder_output_stride]]])
        regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None
        # Logits and their upsampling stay float32 under mixed precision (cheap, and the
        # loss and softmax need the range).
        logits = layers.Conv2D(
            num_classes,
            1,
            kernel_initializer=(
                keras.initializers.TruncatedNormal(stddev=float(logits_init_stddev))
                if logits_init_stddev
                else "glorot_uniform"
            ),
            kernel_regularizer=regularizer,
            name="logits",
            dtype="float32",
        )(features)
        if upsample_logits:
            logits = StrideUpsample(
                decoder_output_stride or output_stride, name="upsample_logits", dtype="float32"
            )([logits, inputs])
        super().__init__(inputs=inputs, outputs=logits, name=name, **kwargs)

        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.output_stride = int(output_stride)
        self.multi_grid = multi_grid
        self.atrous_rates = atrous_rates
        self.image_pooling = bool(image_pooling)
        self.head = head
        self.num_cascaded_blocks = int(num_cascaded_blocks)
        self.upsample_logits = bool(upsample_logits)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.backbone_batch_norm_momentum = float(backbone_batch_norm_momentum)
        self.freeze_batch_norm = bool(freeze_batch_norm)
        self.weight_decay = float(weight_decay)
        self.aspp_filters = int(aspp_filters)
        self.aspp_dropout = float(aspp_dropout)
        self.decoder_output_stride = decoder_output_stride
        self.decoder_separable = bool(decoder_separable)
        self.backbone_padding = backbone_padding
        self.logits_init_stddev = float(logits_init_stddev)
        self.model_input_shape = input_shape
        self.performance = performance
        if freeze_batch_norm:
            for layer in iter_layers(self):
                if isinstance(layer, layers.BatchNormalization):
                    if not isinstance(layer, BatchNormalization):
                        raise TypeError(f"{layer.name} is not deeplab's BatchNormalization")
                    layer.freeze_statistics = True

    @property
    def logits_stride(self):
        """Output stride of the logits: the decoder's when there is one, else the model's."""
        return self.decoder_output_stride or self.output_stride

    @property
    def backbone_model(self):
        """The nested ResNet (a keras.Model returning a dict of endpoints)."""
        return self.get_layer(self.backbone)

    def recompute_segments(self, through):
        """The model split at backbone endpoint ``through``, for recomputing the first part in
        the backward pass (``deeplab.training.recompute``).

        ``rest(front(x, training=t), x, training=t)`` computes ``self(x, training=t)`` with the
        same layers and variables.

        Args:
          through: a backbone endpoint before the features ("stem", "block1", ...).

        Returns:
          :data:`RecomputeSegments` ``(front, rest)``.

        Raises:
          UnsplittableModelError: this model cannot be split there (the DeepLabv3+ decoder
            reads backbone features the front would hide).
          ValueError: ``through`` is no endpoint of the backbone.
        """
        if self.decoder_output_stride:
            raise UnsplittableModelError(
                "the decoder reads backbone features from inside the recomputed part"
            )
        backbone = self.backbone_model
        endpoints = backbone.output
        if through not in endpoints or through == "features":
            raise ValueError(
                f"{through!r} is not an endpoint of {backbone.name} to split at: "
                f"choose one of {sorted(set(endpoints) - {'features'})}"
            )
        front = keras.Model(
            backbone.input, endpoints[through], name=f"{backbone.name}_through_{through}"
        )
        late = keras.Model(
            endpoints[through], endpoints["features"], name=f"{backbone.name}_after_{through}"
        )
        # The head, as __init__ builds it: [aspp] -> logits -> [upsample to the image].
        head = ([self.get_layer("aspp")] if self.head == "aspp" else []) + [
            self.get_layer("logits")
        ]
        upsample = self.get_layer("upsample_logits") if self.upsample_logits else None
        used = {id(l) for l in front.layers + late.layers + head + [upsample]}
        missing = [
            l.name
            for l in backbone.layers + self.layers
            if l is not backbone
            and id(l) not in used
            and not isinstance(l, keras.layers.InputLayer)
        ]
        if missing:
            raise ValueError(
                f"recompute_segments does not run layers {missing} of "
                f"{self.name}; update DeepLabV3.recompute_segments with __init__"
            )

        def rest(features, images, training=None):
            features = late(features, training=training)
            for layer in head:
                features = layer(features, training=training)
            if upsample is not None:
                features = upsample([features, images])
            return features

        return RecomputeSegments(front, rest)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "output_stride": self.output_stride,
            "multi_grid": self.multi_grid,
            "atrous_rates": self.atrous_rates,
            "image_pooling": self.image_pooling,
            "head": self.head,
            "num_cascaded_blocks": self.num_cascaded_blocks,
            "upsample_logits": self.upsample_logits,
            "batch_norm_momentum": self.batch_norm_momentum,
            "backbone_batch_norm_momentum": self.backbone_batch_norm_momentum,
            "freeze_batch_norm": self.freeze_batch_norm,
            "weight_decay": self.weight_decay,
            "aspp_filters": self.aspp_filters,
            "aspp_dropout": self.aspp_dropout,
            "decoder_output_stride": self.decoder_output_stride,
            "decoder_separable": self.decoder_separable,
            "backbone_padding": self.backbone_padding,
            "logits_init_stddev": self.logits_init_stddev,
            "input_shape": self.model_input_shape,
        }

    @classmethod
    def complete_config(cls, config):
        """``config`` with every option it lacks (written before the option existed) set to
        what such a config is built with: the constructor's default, except MobileNetV2's
        padding, which was "same" before the option existed."""
        config = dict(config)
        if config.get("backbone") in MOBILENET_BACKBONES:
            config.setdefault("backbone_padding", "same")
        for name, parameter in inspect.signature(cls.__init__).parameters.items():
            if (
                parameter.kind == inspect.Parameter.KEYWORD_ONLY
                and name not in NON_CONFIG_KEYWORDS
                and parameter.default is not inspect.Parameter.empty
            ):
                config.setdefault(name, parameter.default)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        del custom_objects
        return cls(**cls.complete_config(config))


# The authors' MobileNetV2 BN decay (slim's mobilenet training_scope, which their
# feature_extractor.py uses for the backbone; their ASPP uses 0.9997).
MOBILENET_BATCH_NORM_MOMENTUM = 0.997


def resolve_backbone_momentum(backbone, batch_norm_momentum, backbone_batch_norm_momentum=0.0):
    """The backbone's BN decay: ``backbone_batch_norm_momentum`` when set (non-zero), else
    0.997 for MobileNetV2 and ``batch_norm_momentum`` for ResNet."""
    if backbone_batch_norm_momentum:
        return float(backbone_batch_norm_momentum)
    if backbone in MOBILENET_BACKBONES:
        return MOBILENET_BATCH_NORM_MOMENTUM
    return float(batch_norm_momentum)


def build_model(
    *,
    backbone="resnet101",
    num_classes=21,
    output_stride=16,
    multi_grid=(1, 2, 4),
    atrous_rates=(6, 12, 18),
    image_pooling=True,
    head="aspp",
    num_cascaded_blocks=0,
    upsample_logits=True,
    **kwargs,
):
    """Builds DeepLabv3; defaults are the paper's best VOC model (Table 5 last row / Table 6).

    Keyword arguments are those of :class:`DeepLabV3` (and of the binaries' flags), plus
    ``performance`` (a :class:`deeplab.model.options.PerformanceOptions`, not in the config).

    Returns:
      A keras.Model from normalized float images [N, H, W, 3] to float32 logits.
    """
    return DeepLabV3(
        backbone=backbone,
        num_classes=num_classes,
        output_stride=output_stride,
        multi_grid=multi_grid,
        atrous_rates=atrous_rates,
        image_pooling=image_pooling,
        head=head,
        num_cascaded_blocks=num_cascaded_blocks,
        upsample_logits=upsample_logits,
        **kwargs,
    )


def rebuild_with_output_stride(model, output_stride, **overrides):
    """The same weights at another output stride (Tables 4, 6, 10: train at 16, eval at 8).

    Only strides and atrous rates depend on the output stride, never a variable, so every
    variable of ``model`` is copied, none missing or unexpected.

    Args:
      model: a :class:`DeepLabV3`.
      output_stride: the new output stride.
      **overrides: other constructor arguments to change (e.g. ``input_shape``, or
        ``performance``: by default the new model keeps ``model.performance``).

    Returns:
      A new DeepLabV3 sharing no state with ``model`` but holding the same weight values.
    """
    config = {
        **model.get_config(),
        "output_stride": output_stride,
        "performance": getattr(model, "performance", None),
        **overrides,
    }
    new_model = DeepLabV3.from_config(config)
    old_paths = [v.path for v in model.weights]
    new_paths = [v.path for v in new_model.weights]
    if old_paths != new_paths:
        raise ConfigError("models differ in variables; cannot switch output stride")
    new_model.set_weights(model.get_weights())
    return new_model


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


def load_imagenet_backbone(model, path):
    """Loads a keras.applications ImageNet weight file into ``model``'s backbone.

    ResNet50/101 backbones take any file that ``keras.applications.ResNet50/101(weights=path,
    include_top=False)`` accepts (the legacy ``*_notop.h5`` files Keras downloads and
    ``.weights.h5`` files alike); MobileNetV2 backbones take the ``MobileNetV2`` files of the
    same depth multiplier (its final 1x1 ``Conv_1`` is not part of DeepLab's backbone and is
    left out). Block5-7 and the head keep their initialization.

    Args:
      model: a :class:`DeepLabV3`.
      path: the weight file.

    Returns:
      The number of backbone layers whose weights were loaded.

    Raises:
      UserError: the file is missing, unreadable, or holds another ResNet depth.
    """
    backbone_name = getattr(model, "backbone", None)
    if backbone_name not in ("resnet50", "resnet101") + tuple(MOBILENET_BACKBONES):
        raise ConfigError(
            "load_imagenet_backbone needs a DeepLabV3 model with a resnet50, "
            f"resnet101 or mobilenet_v2 backbone, not {backbone_name!r}"
        )
    if not os.path.isfile(path):
        raise UserError(f"ImageNet weight file not found: {path}")
    if backbone_name in MOBILENET_BACKBONES:
        alpha, divisible_by = MOBILENET_BACKBONES[backbone_name]
        if divisible_by != 8:
            raise ConfigError(
                f"{backbone_name} rounds channels like the authors' DeepLab, not "
                "like keras.applications.MobileNetV2, whose ImageNet files "
                "therefore do not fit it; use --backbone=mobilenet_v2"
            )
        description = f"MobileNetV2 (alpha={alpha})"

        def application(**kwargs):
            return keras.applications.MobileNetV2(alpha=alpha, **kwargs)
    else:
        depth = BACKBONES[backbone_name][0]
        description = f"ResNet-{depth}"
        file_depth = _resnet_depth_in_file(path)
        if file_depth is not None and file_depth != depth:
            raise UserError(
                f"{path} holds ResNet-{file_depth} weights but the model's backbone is "
                f"resnet{depth}: pass --backbone=resnet{file_depth} or a ResNet-{depth} file"
            )
        application = {50: keras.applications.ResNet50, 101: keras.applications.ResNet101}[depth]
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
