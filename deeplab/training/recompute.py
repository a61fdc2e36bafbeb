"""A training forward pass that recomputes the early backbone during the backward pass.

The first layers of the ResNet hold most of the activations a training step keeps for its
backward pass (large feature maps, few channels) but cost little to compute: at 321x321 the
stem, block1 and block2 of ResNet-101 took 20% of the training-mode forward time at batch 2, yet
keep about 40% of the saved activations. ``training_forward(model, "block2")`` runs the model as
the two parts of ``model.recompute_segments("block2")`` (the model knows its own layers; this
module knows none of their names), which share the model's layers and variables: the backbone up
to the end of block2, whose forward pass is run again inside its own gradient (so none of its
activations are kept between the forward and the backward pass, only its output), and the rest.
Outputs and gradients are those of ``model(images, training=True)``; the BN moving statistics
are updated once, by the first forward pass (the recomputation runs inside
``deeplab.model.batch_norm.recomputing(<the front's layers>)``). ``deeplab.train`` uses it with
block2 by default (``--recompute_through``). Measured effect: benchmarks/RESULTS.md
("Session 6").

Only TensorFlow, and only where every trained BN layer in the recomputed part takes the fused
training kernel of deeplab.model.batch_norm (not synchronized BN, not a model built with
``PerformanceOptions(fused_batch_norm=False)``): elsewhere ``training_forward`` returns the plain
``model(images, training=True)`` and says why in ``forward.recompute_disabled_reason``.
"""

import keras

from deeplab.common.errors import ConfigError
from deeplab.model import batch_norm
from deeplab.model.deeplabv3 import UnsplittableModelError
from deeplab.model.deeplabv3 import iter_layers

# Backbone endpoints up to which the forward pass can be recomputed. Not block3: recomputing
# most of the network in the backward pass brings most of its activations back at once there
# (at batch 8, 321x321 the step's peak was higher than through block2).
SEGMENT_ENDS = ("none", "stem", "block1", "block2")


def _plain(model, reason=None):
    def forward(images):
        return model(images, training=True)

    forward.recompute_through = "none"
    forward.recompute_disabled_reason = reason
    return forward


def _recompute_blocker(layers):
    if keras.backend.backend() != "tensorflow":
        return (
            f"the {keras.backend.backend()} backend (recomputation is implemented for TensorFlow)"
        )
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            fusable = isinstance(layer, batch_norm.BatchNormalization)
            if not fusable or not layer.fused:
                return f"BN layer {layer.name} does not take the fused training kernel"
            if layer.synchronized or layer.renorm:
                return f"BN layer {layer.name} is synchronized across replicas"
    return None


def training_forward(model, recompute_through="block2"):
    """Returns ``forward(images) -> logits`` for the training step of a DeepLabV3 ``model``.

    Args:
      model: a ``deeplab.model.deeplabv3.DeepLabV3`` (any model with its
        ``recompute_segments(through)``).
      recompute_through: one of SEGMENT_ENDS: the backbone endpoint up to which the forward
        pass is recomputed in the backward pass; "none" runs the model as it is.

    Raises:
      ConfigError: unknown ``recompute_through``.
    """
    if recompute_through not in SEGMENT_ENDS:
        raise ConfigError(
            f"--recompute_through={recompute_through!r}: choose one of {', '.join(SEGMENT_ENDS)}"
        )
    if recompute_through == "none":
        return _plain(model)
    if not hasattr(model, "recompute_segments"):
        return _plain(model, f"{type(model).__name__} has no recompute_segments")
    try:
        front, rest = model.recompute_segments(recompute_through)
    except UnsplittableModelError as error:
        return _plain(model, str(error))
    front_layers = list(iter_layers(front))
    reason = _recompute_blocker(front_layers)
    if reason:
        return _plain(model, reason)

    # backend-specific: only the TensorFlow backend recomputes (others returned above)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    @tf.custom_gradient
    def recomputed(images):
        features = front(images, training=True)

        def gradient(upstream, variables=None):
            # The recomputation may only start once the gradient has reached this part; the
            # control dependency also keeps graph optimizers from merging it with the forward
            # pass (which would keep the activations alive again).
            with tf.control_dependencies([upstream]):
                images_again = tf.identity(images)
            with batch_norm.recomputing(front_layers), tf.GradientTape() as tape:
                again = front(images_again, training=True)
            # No gradient for the images: nothing before the backbone is trained.
            grads = tape.gradient(again, list(variables or ()), output_gradients=upstream)
            return None, grads

        return features, gradient

    def forward(images):
        return rest(recomputed(images), images, training=True)

    forward.recompute_through = recompute_through
    forward.recompute_disabled_reason = None
    return forward
