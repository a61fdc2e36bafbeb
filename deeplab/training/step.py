"""The training step: one SGD update of the model on one replica's batch.

:func:`build_replica_step` returns the per-replica function (images, labels) -> values that
``strategy.run`` calls: the forward pass (with recomputation), the loss over the global
batch's valid pixels, the backward pass, the weight-decay gradients and the optimizer update.
:func:`build_train_step` wraps it into the ``tf.function`` that reads a batch from an iterator
and runs it on every replica. Both loops (``deeplab.training.loop`` and
``deeplab.training.ps_loop``) run the same step; tests call it alone.
"""

import dataclasses

import tensorflow as tf

from deeplab.training import losses
from deeplab.training import recompute
from deeplab.training import weight_decay


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """What the loss needs besides logits and labels (from the experiment config)."""

    ignore_label: int = 255
    class_weights: tuple = None
    focal_gamma: float = 0.0
    top_k_percent_pixels: float = 1.0
    hard_example_mining_step: int = 0

    @classmethod
    def from_config(cls, train_config, *, ignore_label, class_weights=None):
        """The settings of ``train_config``; ``class_weights``: the run's resolved weights
        (numbers, one per class, or None), which the trainer computes once at the start
        (``train_config.class_weights`` may name a rule)."""
        return cls(
            ignore_label=ignore_label,
            class_weights=tuple(class_weights) if class_weights else None,
            focal_gamma=train_config.focal_gamma,
            top_k_percent_pixels=train_config.top_k_percent_pixels,
            hard_example_mining_step=train_config.hard_example_mining_step,
        )


def replica_loss(logits, targets, step, settings):
    """(sum of the counted pixels' losses, their number, per-pixel valid mask) of one replica."""
    if settings.focal_gamma:
        pixel_losses, valid = losses.focal_pixel_losses(
            targets,
            logits,
            gamma=settings.focal_gamma,
            ignore_label=settings.ignore_label,
            class_weights=settings.class_weights,
        )
    else:
        pixel_losses, valid = losses.pixel_cross_entropy(
            targets,
            logits,
            ignore_label=settings.ignore_label,
            class_weights=settings.class_weights,
        )
    if settings.top_k_percent_pixels < 1.0:  # hard-pixel mining, per replica
        fraction = losses.hard_pixel_fraction(
            step, settings.top_k_percent_pixels, settings.hard_example_mining_step
        )
        loss_sum, loss_count = losses.hard_pixel_selection(pixel_losses, valid, fraction)
    else:
        loss_sum, loss_count = tf.reduce_sum(pixel_losses), tf.reduce_sum(valid)
    return loss_sum, loss_count, valid


def distillation_loss(logits, teacher_logits, targets, ignore_label):
    """(sum of the pixels' cross-entropy to the teacher's softmax, their number, valid mask):
    ``-sum_c softmax(teacher)_c * log softmax(logits)_c`` where the label is not
    ``ignore_label``; no gradient reaches the teacher."""
    target = tf.stop_gradient(tf.nn.softmax(tf.cast(teacher_logits, tf.float32), axis=-1))
    log_probabilities = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    valid = tf.cast(tf.not_equal(targets, ignore_label), tf.float32)
    pixel_losses = -tf.reduce_sum(target * log_probabilities, axis=-1) * valid
    return tf.reduce_sum(pixel_losses), tf.reduce_sum(valid), valid


def gradient_multipliers(model, logits_bias_multiplier=1.0):
    """Per-variable gradient factors, aligned with ``model.trainable_variables``: the logits
    layer's bias gets ``logits_bias_multiplier`` (the authors' train_utils.py trains the last
    layer's biases at twice the learning rate, as a gradient multiplier), everything else 1.
    With SGD + momentum and no decay on biases, a factor on the gradient is the same as one on
    the learning rate. None when every factor is 1."""
    if float(logits_bias_multiplier) == 1.0:
        return None
    try:
        bias = model.get_layer("logits").bias
    except ValueError:
        return None
    if bias is None:
        return None
    factors = [
        float(logits_bias_multiplier) if variable is bias else 1.0
        for variable in model.trainable_variables
    ]
    return factors if any(f != 1.0 for f in factors) else None


def build_replica_step(
    model,
    optimizer,
    schedule,
    loss_settings,
    *,
    num_replicas=1,
    recompute_through="none",
    step_counter=None,
    check_gradients=True,
    multipliers=None,
    teacher=None,
):
    """The per-replica training step.

    Args:
      model: a DeepLabV3 (built under the strategy's scope).
      optimizer: its optimizer (built), e.g. ``deeplab.training.optimizers.SGD``.
      schedule: learning rate as a function of the step.
      loss_settings: a :class:`LossSettings`.
      num_replicas: replicas the global batch is split over.
      recompute_through: ``deeplab.training.recompute``'s endpoint ("none" keeps activations).
      step_counter: None: the schedule follows ``optimizer.iterations``. A tf.Variable (the
        parameter-server step counter): the schedule follows it and each step increments it.
      check_gradients: also report non-finite gradients (off under float16 loss scaling,
        which skips those steps itself).
      multipliers: None, or one gradient factor per trainable variable
        (:func:`gradient_multipliers`).
      teacher: None, or a model (its logits of the student's shape) whose softmax replaces the
        labels as the target (``--distill_from``): the loss is the cross-entropy to it over the
        labels' valid pixels (:func:`distillation_loss`).

    Returns:
      ``step(images, labels) -> {"cross_entropy", "regularization", "correct", "valid",
      "nonfinite", "learning_rate"}`` (per replica; sum them over replicas), with attribute
      ``recompute_disabled_reason`` (None when recomputation is on or not asked for).
    """
    upsample_logits = model.upsample_logits
    # L2 decay terms: gradients added per variable after the backward pass (less memory).
    decay = weight_decay.decay_coefficients(model)
    forward = recompute.training_forward(model, recompute_through)

    def step_number():
        return optimizer.iterations if step_counter is None else step_counter

    def replica_step(images, labels):
        context = tf.distribute.get_replica_context()
        learning_rate = schedule(step_number())
        with tf.GradientTape() as tape:
            logits = forward(images)
            targets = labels
            if not upsample_logits:  # Table 8: the labels at the logits' centres instead
                targets = losses.labels_at_feature_centres(labels, model.logits_stride)
            if teacher is None:
                loss_sum, loss_count, valid = replica_loss(
                    logits, targets, step_number(), loss_settings
                )
            else:
                loss_sum, loss_count, valid = distillation_loss(
                    logits, teacher(images, training=False), targets, loss_settings.ignore_label
                )
            # The mean over the counted pixels of the *global* batch: each replica divides its
            # sum by the all-reduced count, and the optimizer sums the replicas' gradients.
            global_valid = context.all_reduce(tf.distribute.ReduceOp.SUM, loss_count)
            cross_entropy = loss_sum / tf.maximum(global_valid, 1.0)
            # The L2 decay terms' gradients are added after the backward pass, one variable at
            # a time (deeplab.training.weight_decay: less memory); their value is only reported.
            call_loss, decay_loss = weight_decay.split_losses(model, decay)
            regularization = (call_loss + decay_loss) / num_replicas
            total = cross_entropy + regularization
            scaled = optimizer.scale_loss(cross_entropy + call_loss / num_replicas)
        gradients = tape.gradient(scaled, model.trainable_variables)
        if multipliers is not None:
            gradients = [
                g if factor == 1.0 or g is None else g * factor
                for g, factor in zip(gradients, multipliers)
            ]
        gradients = weight_decay.add_decay_gradients(
            gradients,
            model.trainable_variables,
            decay,
            scale=optimizer.scale_loss(tf.constant(1.0)) / num_replicas,
        )
        optimizer.apply(gradients, model.trainable_variables)
        if step_counter is not None:
            step_counter.assign_add(1)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predictions, targets), tf.float32) * valid)
        finite = tf.reduce_all(tf.math.is_finite(total))
        if check_gradients:
            finite = tf.logical_and(finite, tf.math.is_finite(tf.linalg.global_norm(gradients)))
        return {
            "cross_entropy": cross_entropy,
            "regularization": regularization,
            "correct": correct,
            "valid": tf.reduce_sum(valid),
            "nonfinite": 1.0 - tf.cast(finite, tf.float32),
            "learning_rate": learning_rate / num_replicas,
        }

    replica_step.recompute_disabled_reason = forward.recompute_disabled_reason
    return replica_step


def build_train_step(strategy, replica_step, *, jit_compile=False):
    """``train_step(iterator) -> values summed over replicas``: reads one global batch and runs
    ``replica_step`` on every replica. With ``jit_compile`` XLA compiles the per-replica
    computation (reading the iterator cannot be compiled)."""
    compiled = tf.function(replica_step, jit_compile=True) if jit_compile else replica_step

    @tf.function
    def train_step(iterator):
        images, labels = next(iterator)
        per_replica = strategy.run(compiled, args=(images, labels))
        return {
            k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()
        }

    return train_step
