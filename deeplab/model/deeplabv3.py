"""DeepLabv3: a backbone, a head, an optional decoder and the logits (Sec. 3 of the paper).

    import deeplab
    model = deeplab.build_model(backbone="resnet101", num_classes=21, output_stride=16,
                                multi_grid=(1, 2, 4), atrous_rates=(6, 12, 18),
                                image_pooling=True, head="aspp", num_cascaded_blocks=0,
                                upsample_logits=True)
    deeplab.load_imagenet_backbone(model, "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5")

The model maps normalized images (``deeplab.model.preprocessing.normalize_image``) to float32
logits. :class:`DeepLabV3` composes the parts, each made by its own factory from the model's
settings (``deeplab.model.settings.ModelSettings``: the keywords, their defaults and the keys of
``get_config``): the backbone (``backbones``), the head (``heads``: ASPP, ASPP-lite, the
cascade), the DeepLabv3+ decoder (``decoder``), the logits and their upsampling. Keyword names
match the binaries' flag names, except ``performance``
(``deeplab.model.options.PerformanceOptions``: which kernels run), which is not part of the
model's config. Weight files are read by ``deeplab.model.weights``.
"""

import collections

import keras
from keras import layers

from deeplab.common.errors import ConfigError
from deeplab.model import backbones
from deeplab.model import decoder as decoder_lib
from deeplab.model import heads
from deeplab.model import quantize
from deeplab.model import settings as settings_lib

# Names other modules import from here (their homes are the parts' modules).
from deeplab.model.backbones import BACKBONE_NAMES  # noqa: F401
from deeplab.model.backbones import MOBILENET_BACKBONES  # noqa: F401
from deeplab.model.backbones import MOBILENET_BATCH_NORM_MOMENTUM  # noqa: F401
from deeplab.model.backbones import resolve_backbone_momentum  # noqa: F401
from deeplab.model.batch_norm import BatchNormalization
from deeplab.model.heads import ASPP_REFERENCE_STRIDE  # noqa: F401
from deeplab.model.heads import HEAD_NAMES as HEADS  # noqa: F401
from deeplab.model.heads import scale_atrous_rates  # noqa: F401
from deeplab.model.layers import StrideUpsample
from deeplab.model.options import PerformanceOptions
from deeplab.model.settings import ModelSettings
from deeplab.model.weights import load_imagenet_backbone  # noqa: F401

DEFAULT_NAME = "deeplabv3"

RecomputeSegments = collections.namedtuple("RecomputeSegments", ["front", "rest"])
RecomputeSegments.__doc__ = """A DeepLabV3 split in two at a backbone endpoint (see
:meth:`DeepLabV3.recompute_segments`).

front: a keras.Model from the images to the endpoint's features, made of the model's own layers.
rest: ``rest(features, images, training=None) -> logits``: the rest of the backbone and the head
(``images`` only sets the size the logits are upsampled to).
"""


class UnsplittableModelError(ValueError):
    """The model cannot be split at the requested endpoint (the message says why)."""


def iter_layers(layer):
    """Yields ``layer`` and every layer nested inside it, depth first."""
    yield layer
    for sub in layer._flatten_layers(include_self=False, recursive=False):  # pylint: disable=protected-access
        yield from iter_layers(sub)


def check_settings(settings):
    """Raises ConfigError (naming the flag) for settings no model can be built with: each part
    checks the settings it reads, before anything is built."""
    backbones.get(settings.backbone)
    heads.check_head(settings)
    decoder_lib.check_decoder(settings)
    backbones.check_backbone(settings)
    if settings.quantize_aware and not settings.freeze_batch_norm:
        raise ConfigError(
            "--quantize_aware folds BN into the convolutions as the int8 export does, so BN "
            "statistics must be frozen: pass --freeze_batch_norm"
        )


def compose(settings, performance):
    """The functional graph of a DeepLabV3: ``(inputs, logits)``.

    images -> backbone -> head -> [decoder, reading a backbone endpoint] -> logits ->
    [upsampled to the image]. The parts are made in this order, which is also the order their
    layers appear in the model and their initializers draw random numbers.
    """
    inputs = keras.Input(shape=settings.input_shape, name="image")
    backbone = backbones.build_backbone(settings, performance)
    endpoints = backbone.model(inputs)
    features = endpoints["features"]
    head = heads.build_head(settings, performance)
    if head is not None:
        features = head(features)
    decoder = decoder_lib.build_decoder(settings, performance)
    if decoder is not None:
        low_level = endpoints[decoder_lib.ENDPOINT_FOR_STRIDE[settings.decoder_output_stride]]
        features = decoder([features, low_level])
    logits = heads.build_logits(settings)(features)
    if settings.upsample_logits:
        # Float32, as the logits (see heads.build_logits).
        logits = StrideUpsample(
            settings.decoder_output_stride or settings.output_stride,
            name="upsample_logits",
            dtype="float32",
        )([logits, inputs])
    return inputs, logits


def freeze_batch_norm_statistics(model):
    """Every BN layer of ``model`` normalizes with its moving statistics and never updates
    them (``freeze_batch_norm``); gamma and beta still train."""
    for layer in iter_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            if not isinstance(layer, BatchNormalization):
                raise TypeError(f"{layer.name} is not deeplab's BatchNormalization")
            layer.freeze_statistics = True


@keras.saving.register_keras_serializable(package="deeplab")
class DeepLabV3(keras.Model):
    """DeepLabv3 as a functional Keras model whose constructor keywords are its config.

    Keyword arguments:
      every setting of :class:`deeplab.model.settings.ModelSettings` (``backbone``,
        ``num_classes``, ``output_stride``, ..., ``input_shape``; their meaning and defaults
        are documented there), each kept as the attribute of the same name
        (``input_shape``: ``model_input_shape``) and listed by :meth:`get_config`;
      name: the model's name.
      performance: a :class:`deeplab.model.options.PerformanceOptions` (or None: its
        defaults), the kernels the layers run (fused BN training kernel, native dilated
        convolutions). Changes no variable and, up to float rounding, no result, so it is
        not in :meth:`get_config` (model_config.json); kept as ``self.performance``.
      other keywords of ``keras.Model`` (``trainable``).

    Raises:
      ConfigError: settings no model can be built with (the message names the flag).
    """

    def __init__(self, *, name=DEFAULT_NAME, performance=None, **kwargs):
        settings = ModelSettings(
            **{key: kwargs.pop(key) for key in ModelSettings.names() if key in kwargs}
        )
        performance = PerformanceOptions.coerce(performance)
        check_settings(settings)
        inputs, logits = compose(settings, performance)
        if settings.freeze_batch_norm:
            freeze_batch_norm_statistics(keras.Model(inputs, logits))
        if settings.quantize_aware:
            inputs, logits = quantize.quantize_aware_graph(
                inputs, logits, decay=settings.quantize_range_decay
            )
        super().__init__(inputs=inputs, outputs=logits, name=name, **kwargs)
        for setting, value in settings.config().items():
            setattr(self, settings_lib.attribute_name(setting), value)
        self.performance = performance
        if settings.freeze_batch_norm:
            freeze_batch_norm_statistics(self)

    @property
    def settings(self):
        """The model's :class:`deeplab.model.settings.ModelSettings`."""
        return ModelSettings.from_model(self)

    @property
    def logits_stride(self):
        """Output stride of the logits: the decoder's when there is one, else the model's."""
        return self.decoder_output_stride or self.output_stride

    @property
    def backbone_model(self):
        """The nested backbone (a keras.Model returning a dict of endpoints)."""
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
        if self.quantize_aware:
            raise UnsplittableModelError(
                "a quantization-aware model updates its activation ranges in the forward pass, "
                "which recomputing would repeat"
            )
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
        # The head, as compose() builds it: [head layers] -> logits -> [upsample to the image].
        head = [self.get_layer(name) for name in heads.get(self.head).layer_names]
        head.append(self.get_layer("logits"))
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
                f"{self.name}; update DeepLabV3.recompute_segments with compose()"
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
        return {"name": self.name, "trainable": self.trainable, **self.settings.config()}

    @classmethod
    def complete_config(cls, config):
        """``config`` with every setting it lacks (written before the setting existed) set to
        what such a config is built with: the setting's default, except MobileNetV2's
        padding, which was "same" before the option existed."""
        config = dict(config)
        if config.get("backbone") in MOBILENET_BACKBONES:
            config.setdefault("backbone_padding", "same")
        for name, default in {"name": DEFAULT_NAME, **ModelSettings.defaults()}.items():
            config.setdefault(name, default)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        del custom_objects
        return cls(**cls.complete_config(config))


def build_model(**kwargs):
    """Builds DeepLabv3; defaults are the paper's best VOC model (Table 5 last row / Table 6).

    Keyword arguments are those of :class:`DeepLabV3` (the settings of
    :class:`deeplab.model.settings.ModelSettings`, named as the binaries' flags), plus
    ``performance`` (a :class:`deeplab.model.options.PerformanceOptions`, not in the config).

    Returns:
      A keras.Model from normalized float images [N, H, W, 3] to float32 logits.
    """
    return DeepLabV3(**kwargs)


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
