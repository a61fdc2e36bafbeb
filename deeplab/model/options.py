"""Performance options of the model: which kernels run, never what is computed.

    from deeplab.model.options import PerformanceOptions
    model = deeplab.build_model(..., performance=PerformanceOptions(fused_batch_norm=False))

Each option picks between two implementations of the same function (they agree to float
rounding), so none of them is part of the model's config: ``DeepLabV3.get_config()`` and
model_config.json leave them out, a checkpoint restores into a model built with any of them,
and a model rebuilt from its config gets the defaults unless the caller passes others.

The library reads no environment variable. Binaries that honour the historical switches call
:meth:`PerformanceOptions.from_environment` (and, for the optimizer,
``deeplab.training.optimizers.fused_update_from_environment``) and pass the result on.
"""

import dataclasses
import os

# Environment variables the binaries read (see from_environment); "0" turns the option off.
FUSED_BATCH_NORM_VARIABLE = "DEEPLAB_FUSED_BATCH_NORM"


def environment_switch(name, default, environ=None):
    """A boolean switch from the environment: unset or empty -> ``default``, "0" -> False,
    anything else -> True (the historical reading of the DEEPLAB_FUSED_* variables)."""
    value = (os.environ if environ is None else environ).get(name, "")
    if value == "":
        return default
    return value != "0"


@dataclasses.dataclass(frozen=True)
class PerformanceOptions:
    """How the model's layers run; the defaults are the fastest measured choices.

    Attributes:
      fused_batch_norm: training-mode BN runs TensorFlow's fused kernel
        (``deeplab.model.batch_norm.BatchNormalization(fused=True)``). False: Keras' own
        kernel everywhere (for step-by-step comparisons with synchronized BN, which has no
        fused kernel); it also turns off ``deeplab.training.recompute``, which needs it.
      native_dilation: atrous convolutions on TensorFlow run as one dilated ``tf.nn.conv2d``
        (``deeplab.model.layers.AtrousConv2D``). None: where TensorFlow's oneDNN kernels are
        on (detected once per process); False: always ``keras.ops.conv`` (TensorFlow's
        SpaceToBatchND path); True: always native (the caller vouches for the kernels).
    """

    fused_batch_norm: bool = True
    native_dilation: bool | None = None

    def __post_init__(self):
        if not isinstance(self.fused_batch_norm, bool):
            raise TypeError(f"fused_batch_norm must be a bool, got {self.fused_batch_norm!r}")
        if self.native_dilation is not None and not isinstance(self.native_dilation, bool):
            raise TypeError(
                f"native_dilation must be None, True or False, got {self.native_dilation!r}"
            )

    @classmethod
    def coerce(cls, value):
        """``value`` as PerformanceOptions: None -> the defaults; a dict -> its fields."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(
            f"performance must be a PerformanceOptions, a dict or None, got {type(value).__name__}"
        )

    @classmethod
    def from_environment(cls, environ=None, base=None):
        """``base`` (default: the defaults) with the environment's overrides applied.

        DEEPLAB_FUSED_BATCH_NORM=0 sets ``fused_batch_norm=False`` (any other non-empty
        value sets True). For the binaries; the library never calls it.

        Args:
          environ: a mapping to read instead of ``os.environ``.
          base: the options to start from.
        """
        base = cls.coerce(base)
        return dataclasses.replace(
            base,
            fused_batch_norm=environment_switch(
                FUSED_BATCH_NORM_VARIABLE, base.fused_batch_norm, environ
            ),
        )

    def replace(self, **changes):
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def as_dict(self):
        """The fields as a plain dict (for logs and run records)."""
        return dataclasses.asdict(self)


__all__ = ["FUSED_BATCH_NORM_VARIABLE", "PerformanceOptions", "environment_switch"]
