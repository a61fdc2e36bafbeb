"""The "poly" learning-rate policy of DeepLabv3 (Sec. 4.1).

    lr(step) = (base_lr - end_lr) * (1 - min(step, max_steps) / max_steps) ** power + end_lr

with power 0.9. With ``end_learning_rate=0`` (the default, and the paper's setting) this is the
paper's ``base_lr * (1 - iter / max_iter) ** 0.9``; past ``max_steps`` the rate stays at
``end_learning_rate``. The ``(base - end)`` form is the one of TensorFlow's polynomial decay,
which the original DeepLab training used, so a non-zero end rate is reached continuously.

An optional linear warmup multiplies the rate by ``min(1, step / warmup_steps)``: it starts at 0,
joins the poly curve exactly at ``warmup_steps`` and is off by default (the paper uses none).
"""

import keras
from keras import ops

from deeplab.common.errors import ConfigError


@keras.saving.register_keras_serializable(package="deeplab")
class PolyLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Poly learning-rate decay with optional linear warmup (Sec. 4.1).

    Paper settings: ``PolyLearningRate(0.007, 30000)`` for VOC trainaug at OS 16,
    ``PolyLearningRate(0.001, 30000)`` for the frozen-BN OS 8 stage, 90000 steps on Cityscapes.

    Args:
      base_learning_rate: rate at step 0 (after warmup, if any).
      max_steps: step at which the decay reaches ``end_learning_rate``.
      power: exponent of the polynomial; 0.9 in the paper.
      end_learning_rate: rate at and after ``max_steps``.
      warmup_steps: length of the linear warmup; 0 disables it.
      name: name of the schedule.
    """

    def __init__(
        self,
        base_learning_rate,
        max_steps,
        power=0.9,
        end_learning_rate=0.0,
        warmup_steps=0,
        name="poly_learning_rate",
    ):
        if max_steps <= 0:
            raise ConfigError(f"PolyLearningRate max_steps must be > 0, got {max_steps}")
        if not 0 <= warmup_steps < max_steps:
            raise ConfigError(
                f"PolyLearningRate warmup_steps must be in [0, max_steps={max_steps}), "
                f"got {warmup_steps}"
            )
        if power <= 0:
            raise ConfigError(f"PolyLearningRate power must be > 0, got {power}")
        if not 0 <= end_learning_rate <= base_learning_rate:
            raise ConfigError(
                "PolyLearningRate needs 0 <= end_learning_rate <= base_learning_rate, got "
                f"end_learning_rate={end_learning_rate}, base_learning_rate={base_learning_rate}"
            )
        self.base_learning_rate = float(base_learning_rate)
        self.max_steps = int(max_steps)
        self.power = float(power)
        self.end_learning_rate = float(end_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.name = name

    def __call__(self, step):
        """The learning rate at ``step``.

        Args:
          step: a Python int, numpy scalar or backend scalar tensor of any integer or float
            dtype (e.g. ``optimizer.iterations``); negative steps count as 0.

        Returns:
          float32 scalar tensor.
        """
        step = ops.maximum(ops.cast(step, "float32"), 0.0)
        progress = ops.minimum(step, float(self.max_steps)) / float(self.max_steps)
        # Clamped because XLA may turn the division into a multiply by the reciprocal, leaving
        # 1 - progress a hair below 0 at max_steps, where a fractional power is NaN.
        decay = ops.power(ops.maximum(1.0 - progress, 0.0), self.power)
        rate = (self.base_learning_rate - self.end_learning_rate) * decay + self.end_learning_rate
        if self.warmup_steps > 0:
            rate = rate * ops.minimum(1.0, step / float(self.warmup_steps))
        return ops.cast(rate, "float32")

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "max_steps": self.max_steps,
            "power": self.power,
            "end_learning_rate": self.end_learning_rate,
            "warmup_steps": self.warmup_steps,
            "name": self.name,
        }


__all__ = ["PolyLearningRate"]
