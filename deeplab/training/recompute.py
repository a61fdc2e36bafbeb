"""A training forward pass that recomputes the early backbone during the backward pass.

The first layers of the ResNet hold most of the activations a training step keeps for its
backward pass (large feature maps, few channels) but cost little to compute: at 321x321 the
stem, block1 and block2 of ResNet-101 took 20% of the training-mode forward time at batch 2, yet
keep about 40% of the saved activations. ``training_forward(model, "block2")`` runs the model as
three parts that share the model's layers and variables: the backbone up to the end of block2, whose forward
pass is run again inside its own gradient (so none of its activations are kept between the
forward and the backward pass, only its output), the rest of the backbone, and the head. Outputs
and gradients are those of ``model(images, training=True)``; the BN moving statistics are updated
once, by the first forward pass (``deeplab.model.batch_norm.recomputing``). ``deeplab.train`` uses it
with block2 by default (``--recompute_through``). Measured effect: benchmarks/RESULTS.md
("Session 6").

Only TensorFlow, and only where every trained BN layer in the recomputed part takes the fused
training kernel of deeplab.model.batch_norm (not synchronized BN, not DEEPLAB_FUSED_BATCH_NORM=0):
elsewhere ``training_forward`` returns the plain ``model(images, training=True)`` and says why in
``forward.recompute_disabled_reason``.
"""

import keras

from deeplab.model import batch_norm
from deeplab.common.errors import ConfigError

# Endpoints of deeplab.model.resnet's backbone up to which the forward pass can be recomputed. Not
# block3: recomputing most of the network in the backward pass brings most of its activations
# back at once there (at batch 8, 321x321 the step's peak was higher than through block2).
SEGMENT_ENDS = ("none", "stem", "block1", "block2")


def _plain(model, reason=None):
    def forward(images):
        return model(images, training=True)

    forward.recompute_through = "none"
    forward.recompute_disabled_reason = reason
    return forward


def _recompute_blocker(layers):
    if keras.backend.backend() != "tensorflow":
        return (f"the {keras.backend.backend()} backend (recomputation is implemented for "
                "TensorFlow)")
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            fusable = isinstance(layer, batch_norm.BatchNormalization)
            if not fusable or not batch_norm.FUSED_TRAINING:
                return f"BN layer {layer.name} does not take the fused training kernel"
            if layer.synchronized or layer.renorm:
                return f"BN layer {layer.name} is synchronized across replicas"
    return None


def training_forward(model, recompute_through="block2"):
    """Returns ``forward(images) -> logits`` for the training step of a DeepLabV3 ``model``.

    Args:
      model: a ``deeplab.model.deeplabv3.DeepLabV3``.
      recompute_through: one of SEGMENT_ENDS: the backbone endpoint up to which the forward
        pass is recomputed in the backward pass; "none" runs the model as it is.

    Raises:
      ConfigError: unknown ``recompute_through``.
    """
    if recompute_through not in SEGMENT_ENDS:
        raise ConfigError(f"--recompute_through={recompute_through!r}: choose one of "
                          f"{', '.join(SEGMENT_ENDS)}")
    if recompute_through == "none":
        return _plain(model)
    if getattr(model, "decoder_output_stride", 0):
        return _plain(model, "the decoder reads backbone features from inside the recomputed "
                             "part")
    backbone = model.backbone_model
    endpoints = backbone.output
    early = keras.Model(backbone.input, endpoints[recompute_through],
                        name=f"{backbone.name}_through_{recompute_through}")
    reason = _recompute_blocker(early.layers)
    if reason:
        return _plain(model, reason)
    late = keras.Model(endpoints[recompute_through], endpoints["features"],
                       name=f"{backbone.name}_after_{recompute_through}")
    # The head, as DeepLabV3 builds it: [aspp] -> logits -> [upsample to the image].
    head = [name for name in ("aspp", "logits") if name in {l.name for l in model.layers}]
    upsample = model.upsample_logits
    used = {id(l) for l in early.layers + late.layers} | {id(model.get_layer(n)) for n in head}
    used |= {id(model.get_layer("upsample_logits"))} if upsample else set()
    missing = [l.name for l in backbone.layers + model.layers
               if l is not backbone and id(l) not in used
               and not isinstance(l, keras.layers.InputLayer)]
    if missing:
        raise ValueError(f"training_forward does not know how to run layers {missing} of "
                         f"{model.name}; update deeplab/training/recompute.py with the model")

    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    @tf.custom_gradient
    def recomputed(images):
        features = early(images, training=True)

        def gradient(upstream, variables=None):
            # The recomputation may only start once the gradient has reached this part; the
            # control dependency also keeps graph optimizers from merging it with the forward
            # pass (which would keep the activations alive again).
            with tf.control_dependencies([upstream]):
                images_again = tf.identity(images)
            with batch_norm.recomputing(), tf.GradientTape() as tape:
                again = early(images_again, training=True)
            # No gradient for the images: nothing before the backbone is trained.
            grads = tape.gradient(again, list(variables or ()), output_gradients=upstream)
            return None, grads

        return features, gradient

    def forward(images):
        features = late(recomputed(images), training=True)
        for name in head:
            features = model.get_layer(name)(features, training=True)
        if upsample:
            features = model.get_layer("upsample_logits")([features, images])
        return features

    forward.recompute_through = recompute_through
    forward.recompute_disabled_reason = None
    return forward
