"""The model's settings: the one list of what a DeepLabV3 is built from.

:class:`ModelSettings` is the single place a model setting is declared (name, default, how
its value is normalized). Everything else is derived from it: ``DeepLabV3``'s keywords, its
``get_config()`` (model_config.json, ``.keras`` files), the defaults that complete a config
written before a setting existed (``DeepLabV3.complete_config``), and the attributes that BN
folding and casting copy to a derived model (``deeplab.model.fuse``). The parts read the
settings they use: the backbone factory (``backbones``), the heads (``heads``), the decoder
(``decoder``). ``deeplab.config.experiment.ModelConfig`` holds the same settings (without
``num_classes`` and ``input_shape``) under the flags' names; ``tests/test_model.py`` checks that
the two agree.

A new model setting: one field here, read by the part that uses it (and, until the flags are
generated from the config, its ``ModelConfig`` field and flag).
"""

import dataclasses


def _ints(value):
    return tuple(int(v) for v in value or ())


def _multi_grid(value):
    return _ints(value) if value else (1, 1, 1)


def _setting(default, normalize=None):
    """A field with its default and the function that normalizes a given value (None: the
    type of the default's annotation)."""
    return dataclasses.field(default=default, metadata={"normalize": normalize})


# Normalization by annotation where a field names no function. Strings are kept as given (a
# wrong value reaches the part that reads it and is refused there with its choices).
_NORMALIZE = {int: int, float: float, bool: bool, str: lambda value: value}

# Settings whose model attribute has another name (keras.Model owns ``input_shape``).
ATTRIBUTE_NAMES = {"input_shape": "model_input_shape"}


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The settings of a DeepLabV3, normalized (ints, floats, bools and tuples of ints).

    Attributes:
      backbone: a name of ``deeplab.model.backbones.BACKBONES``: "resnet50" or "resnet101"
        (ResNet-v1, keras.applications variable layout); "resnet14_tiny" (one unit per block,
        quarter width) for tests and the quick start; "mobilenet_v2" / "mobilenet_v2_dm05"
        (atrous MobileNetV2, depth multiplier 1.0 / 0.5, keras.applications layout: the
        backbone of the authors' mobile models; output stride 4..32, no multi-grid, no
        cascaded blocks).
      num_classes: number of output classes (logits channels).
      output_stride: input / feature resolution, 4..256 (Sec. 3.1).
      multi_grid: unit rates of block4..block7 (Sec. 3.2.1), e.g. (1, 2, 4); empty: (1, 1, 1).
      atrous_rates: ASPP 3x3 rates stated for output_stride 16; scaled by 16/output_stride.
        Empty: the ASPP keeps its 1x1 branch (and image pooling), the head of the authors'
        MobileNetV2 models (ASPP-lite).
      image_pooling: add ASPP's image-level branch (Sec. 3.3).
      head: a name of ``deeplab.model.heads.HEADS``: "aspp" (Sec. 3.3) or "cascade" (1x1
        logits on the last block, Sec. 3.2).
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
        2018, ``deeplab.model.decoder``) fuses block1 (stride 4) or block2 (stride 8) features
        with the ASPP output and the logits are made at that stride. Not in this paper.
      decoder_separable: the decoder's 3x3 convolutions are depthwise-separable (the
        authors' default) or plain.
      backbone_padding: MobileNetV2's stride-2 layers: "symmetric" (feature ``i`` of every
        stride at pixel ``s * i`` at every size) or "same" (TensorFlow's, as in the authors'
        graphs: shifted on even sizes); identical at odd sizes such as 513
        (deeplab.model.mobilenet).
      logits_init_stddev: the logits kernel starts from a truncated normal of this stddev
        (the authors' 0.01, train_utils/model.py); 0: Glorot uniform (Keras' default, this
        project's before issue 34). Changes how a new head starts, never a restored one.
      quantize_aware: the forward pass rounds weights and activations as the int8 TFLite
        export does (``deeplab.model.quantize``): quantization-aware fine-tuning, and an int8
        export that takes its ranges from training. Needs ``freeze_batch_norm``. Adds one
        range (three scalars) per quantized activation and one weight grid per convolution
        output channel; the float variables are unchanged.
      quantize_range_decay: decay of the moving average that tracks each activation's range
        in training (quantize_aware).
      input_shape: shape of one input image; (None, None, 3) accepts any size.
    """

    backbone: str = _setting("resnet101")
    num_classes: int = _setting(21)
    output_stride: int = _setting(16)
    multi_grid: tuple = _setting((1, 2, 4), _multi_grid)
    atrous_rates: tuple = _setting((6, 12, 18), _ints)
    image_pooling: bool = _setting(True)
    head: str = _setting("aspp")
    num_cascaded_blocks: int = _setting(0)
    upsample_logits: bool = _setting(True)
    batch_norm_momentum: float = _setting(0.9997)
    backbone_batch_norm_momentum: float = _setting(0.0)
    freeze_batch_norm: bool = _setting(False)
    weight_decay: float = _setting(1e-4)
    aspp_filters: int = _setting(256)
    aspp_dropout: float = _setting(0.1)
    decoder_output_stride: int = _setting(0, lambda value: int(value or 0))
    decoder_separable: bool = _setting(True)
    backbone_padding: str = _setting("symmetric")
    logits_init_stddev: float = _setting(0.01)
    quantize_aware: bool = _setting(False)
    quantize_range_decay: float = _setting(0.99)
    input_shape: tuple = _setting((None, None, 3), tuple)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            normalize = field.metadata["normalize"] or _NORMALIZE[field.type]
            object.__setattr__(self, field.name, normalize(getattr(self, field.name)))

    @classmethod
    def names(cls):
        """The settings' names, in order (the keys of ``DeepLabV3.get_config()`` besides
        Keras' ``name`` and ``trainable``)."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def defaults(cls):
        """{name: default} of every setting."""
        return {field.name: field.default for field in dataclasses.fields(cls)}

    @classmethod
    def from_model(cls, model):
        """The settings of a built model, read from its attributes."""
        return cls(**{name: getattr(model, attribute_name(name)) for name in cls.names()})

    def config(self):
        """{name: value} of every setting (what ``DeepLabV3.get_config()`` records)."""
        return {name: getattr(self, name) for name in self.names()}

    def replace(self, **changes):
        """A copy with ``changes`` applied (normalized again)."""
        return dataclasses.replace(self, **changes)


def attribute_name(setting):
    """The DeepLabV3 attribute that holds ``setting``."""
    return ATTRIBUTE_NAMES.get(setting, setting)


def attribute_names():
    """Every DeepLabV3 attribute that holds a setting."""
    return tuple(attribute_name(name) for name in ModelSettings.names())


__all__ = ["ModelSettings", "attribute_name", "attribute_names"]
