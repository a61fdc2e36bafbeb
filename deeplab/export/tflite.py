"""TFLite export of a DeepLab model, a TFLite runner, and the float vs. int8 mIOU comparison.

Conversion (``deeplab.export_saved_model --tflite``): TFLite needs a static input size, so a
model is converted for one ``input_size`` (H, W), by default the training crop size. Both
variants take raw RGB pixels and own the normalization, like the SavedModel::

    float32  input  uint8 [1, H, W, 3]  pixels (cast to float inside)
             output int32 [1, H, W]     semantic (argmax)
                    float32 [1, H, W, C] probabilities
    int8     full-integer: every op runs on int8 tensors; calibrated on N images of a split.
             input  uint8 [1, H, W, 3]  pixels, quantized with the input tensor's
                                        (scale, zero_point), normally (1.0, 0): the raw bytes
             output int32 [1, H, W]     semantic: argmax of the upsampled logits (the same
                                        class as argmax of their softmax)
                    uint8 [1, H, W, C]  probabilities, quantized (scale ~1/256): the softmax
                                        at the feature resolution, upsampled bilinearly
                                        (single-scale exports; with scales or flip, the
                                        float graph's softmax of upsampled logits)

The int8 graph upsamples (logits and probabilities) with the model's stride grid. At input
sizes ``stride * k + 1`` (513 at stride 16) that grid is an ``align_corners=True`` resize's, and
the graph uses one int8 RESIZE_BILINEAR, which rounds once, as the authors' int8 files do; at
other sizes the grid's own ops (gathers, differences, products, blends), each rounded. On the
imported authors' model, quantization-aware, the single resize gives the float model's class on
0.1% more pixels (experiments/RESULTS.md, "Issue 33").

Why the int8 graph's softmax sits before the upsampling: LiteRT's XNNPACK delegate has no int8
softmax, and the reference kernel on [1, 513, 513, 21] took 53 ms of a 233 ms ResNet-101 call
(benchmarks/RESULTS.md, "Serving"); at the feature resolution it is 1/256 of that work. The
class map is unaffected (upsampling and argmax of the logits, as in the float graph); the
probabilities are a bilinear blend of the neighbouring features' softmax instead of the softmax
of blended logits, a difference below the output's 1/256 quantization step except near class
boundaries.

uint8 (not int8) input: camera frames and decoded images are uint8, and the official DeepLab
TFLite models take uint8 as well. The export's multi-scale + flip average (static sizes) is in
both graphs.

Each exported ``NAME.tflite`` has a sidecar ``NAME.json`` (class names, palette, input size,
pad value, quantization). :class:`TFLiteSegmenter` runs any DeepLab TFLite model on an image of
any size:

1. letterbox: resize the image bilinearly by ``r = min(H_in / H, W_in / W)`` to
   ``(round(r * H), round(r * W))``, then pad bottom and right to (H_in, W_in) with the pad
   pixel (the pixel the model normalizes to zero: the ImageNet mean for ours, 128 for the
   official MobileNetV2 models);
2. feed it (uint8 bytes as they are when the input is the identity quantization or there is
   no sidecar; otherwise pixels quantized with the input's scale and zero point);
3. take the int class-map output (or the argmax of a [1, H, W, C] output), crop the padding
   away and resize back to (H, W) with nearest neighbour (labels are never interpolated).

An image already of the input size is fed unchanged and its output returned unchanged.

Without a sidecar (the official DeepLab v3 MobileNetV2 PASCAL models: uint8 [1, 513, 513, 3]
input with quantization (1/128, 128), i.e. the model sees ``(q - 128) / 128`` in [-1, 1), and an
int64 ArgMax [1, 513, 513] output) raw bytes are fed, padding uses 128 and the palette is
the PASCAL color map.
"""

import json
import os
import warnings

import numpy as np
from PIL import Image

from deeplab.common import atomic_io
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.common.inference_options import InferenceOptions
from deeplab.common.progress import Progress
from deeplab.data import tfrecord
from deeplab.data.datasets_info import color_map

# Padding value for a model without a sidecar: MobileNet-style inputs map 128 to ~0.
DEFAULT_PAD_VALUE = (128, 128, 128)
QUANTIZATIONS = ("none", "int8")


def parse_input_size(value):
    """``"S"``, ``"H,W"``, an int or a pair -> (H, W) positive ints.

    Raises:
      ConfigError: anything else (named as --tflite_input_size).
    """
    if isinstance(value, str):
        value = [v for v in value.replace("x", ",").split(",") if v.strip()]
    if isinstance(value, int):
        value = [value]
    try:
        size = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"--tflite_input_size takes S or H,W (positive), got {value!r}")
    return size


def model_pad_value():
    """The pixel our models normalize to (almost) zero: the ImageNet mean, rounded."""
    # Keras (deeplab.model): for exports only, the TFLite runner works without it
    from deeplab.model.preprocessing import MEAN_RGB  # pylint: disable=import-outside-toplevel

    return tuple(int(round(v)) for v in MEAN_RGB)


# ---------------------------------------------------------------------------------------------
# Letterbox (shared by the runner and by int8 calibration, so calibration sees what inference
# feeds).
# ---------------------------------------------------------------------------------------------


def letterbox(image, input_size, pad_value):
    """Resizes (keeping the aspect ratio) and pads an image to the model's input size.

    Args:
      image: uint8 [H, W, 3].
      input_size: (H_in, W_in).
      pad_value: RGB pixel for the padding (bottom and right).

    Returns:
      (uint8 [H_in, W_in, 3], (h, w)): the model input and the size of the image inside it.
    """
    image = np.asarray(image, np.uint8)
    height, width = image.shape[:2]
    in_h, in_w = input_size
    if (height, width) == (in_h, in_w):
        return image, (height, width)
    ratio = min(in_h / height, in_w / width)
    h = min(in_h, max(1, int(round(height * ratio))))
    w = min(in_w, max(1, int(round(width * ratio))))
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), np.uint8)
    padded = np.empty((in_h, in_w, 3), np.uint8)
    padded[...] = np.asarray(pad_value, np.uint8)
    padded[:h, :w] = resized
    return padded, (h, w)


def unletterbox(labels, inner_size, image_size):
    """Crops the padding from a class map and resizes it to the image with nearest neighbour.

    Args:
      labels: integer [H_in, W_in].
      inner_size: (h, w) returned by :func:`letterbox`.
      image_size: (H, W) of the original image.

    Returns:
      int32 [H, W].
    """
    h, w = inner_size
    labels = np.asarray(labels)[:h, :w].astype(np.int32)
    height, width = image_size
    if (h, w) == (height, width):
        return labels
    # Nearest neighbour with half-pixel centers: output pixel i samples floor((i + 0.5) * h / H).
    rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(np.int64)
    cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(np.int64)
    return labels[rows[:, None], cols[None, :]]


# ---------------------------------------------------------------------------------------------
# Conversion.
# ---------------------------------------------------------------------------------------------


def _feature_softmax_head(model):
    """(model up to the logits at feature resolution, its StrideUpsample layer), or None when
    ``model`` is not a functional DeepLab ending in ``logits`` -> ``upsample_logits``."""
    # pylint: disable=import-outside-toplevel
    # Keras and the model code: conversion only, the TFLite runner works without them
    import keras

    from deeplab.model.layers import StrideUpsample  # conversion only (Keras)

    try:
        logits, upsample = model.get_layer("logits"), model.get_layer("upsample_logits")
    except (ValueError, AttributeError):
        return None
    if not isinstance(upsample, StrideUpsample) or model.layers[-1] is not upsample:
        return None
    return keras.Model(model.input, logits.output), upsample


def _frozen_function(model, input_size, options, *, input_dtype, feature_softmax=False):
    """A variable-free concrete function [1, H, W, 3] pixels -> (probabilities, semantic).

    ``options``: an :class:`~deeplab.common.inference_options.InferenceOptions` whose scales and
    flip are averaged in the graph; a TFLite file takes the whole (letterboxed) image, so
    windows and padding are refused. ``feature_softmax``: single-scale graphs take the softmax
    at the feature resolution and upsample the probabilities (the int8 export, see the module
    docstring); the class map is the argmax of the upsampled logits either way.
    """
    # pylint: disable=import-outside-toplevel
    # TensorFlow and the model code: conversion only, the TFLite runner works without them
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants  # conversion only

    from deeplab.export.serving import segment_images  # conversion only (TensorFlow)
    from deeplab.model.preprocessing import normalize_image  # conversion only (Keras)

    options = options or InferenceOptions()
    if options.tile_size or options.pad_to:
        raise ConfigError(
            "a TFLite file takes the whole (letterboxed) image: export it without "
            "--eval_tile_size / --eval_pad_to"
        )
    height, width = input_size
    single = options.scales == (1.0,) and not options.flip
    head = _feature_softmax_head(model) if feature_softmax and single else None

    quantized = head is not None and getattr(model, "quantize_aware", False)
    if quantized:
        from deeplab.model import quantize  # conversion only (Keras)

        logits_range = quantize.logits_range(model)

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], input_dtype, name="images")])
    def segment(images):
        if quantized:
            return _quantized_head(head, images, logits_range)
        if head is None:
            return segment_images(model, images, options)
        features_model, upsample = head
        normalized = normalize_image(images)
        logits = tf.cast(features_model(normalized, training=False), tf.float32)

        def upsampled(x):
            # One RESIZE_BILINEAR where the stride grid is align_corners' (as in the
            # quantization-aware graph, quantized_upsample), the stride grid's ops elsewhere.
            if corners_aligned(x.shape[1:3], (height, width), upsample.stride):
                return tf.compat.v1.image.resize_bilinear(x, (height, width), align_corners=True)
            return upsample([x, normalized])

        probabilities = upsampled(tf.nn.softmax(logits, axis=-1))
        semantic = tf.argmax(upsampled(logits), axis=-1, output_type=tf.int32)
        return {"semantic": semantic, "probabilities": probabilities}

    # Variables become constants, so the converter folds batch norm into the convolutions.
    return convert_to_constants.convert_variables_to_constants_v2(segment.get_concrete_function())


def _quantized_head(head, images, logits_range):
    """The int8 export's graph of a quantization-aware model, every tensor on the 8-bit grid
    the converter will give it: the pixels ([0, 255], scale 1), the model's own ranges, the
    softmax at the feature resolution (TFLite's fixed [0, 255/256]) and the stride-aware
    upsampling of the probabilities and the logits (ranges derived from theirs)."""
    # pylint: disable=import-outside-toplevel
    # TensorFlow and the model code: conversion only, the TFLite runner works without them
    import tensorflow as tf

    from deeplab.model import quantize  # conversion only (Keras)
    from deeplab.model.preprocessing import MEAN_RGB  # conversion only (Keras)

    features_model, upsample = head
    pixels = quantize.fake_quant(tf.cast(images, tf.float32), *quantize.PIXEL_RANGE)
    # normalize_image with its subtraction rounded (the flip keeps the scale).
    centered = quantize.fake_quant(
        pixels - quantize.quantized_mean(MEAN_RGB), *quantize.NORMALIZED_RANGE
    )
    logits = tf.cast(features_model(tf.reverse(centered, [-1]), training=False), tf.float32)
    size = images.shape[1:3]
    stride = upsample.stride
    scores = quantize.fake_quant(tf.nn.softmax(logits, axis=-1), *quantize.SOFTMAX_RANGE)
    probabilities = quantized_upsample(scores, size, stride, quantize.SOFTMAX_RANGE)
    upsampled = quantized_upsample(logits, size, stride, logits_range)
    semantic = tf.argmax(upsampled, axis=-1, output_type=tf.int32)
    return {"semantic": semantic, "probabilities": probabilities}


def corners_aligned(in_size, out_size, stride):
    """Whether the stride-aware upsampling from ``in_size`` to ``out_size`` samples the grid
    of an ``align_corners=True`` resize: ``(in - 1) * stride == out - 1`` on both axes (input
    sizes ``stride * k + 1``: 513, 321 at stride 16 or 8)."""
    return all((int(i) - 1) * int(stride) == int(o) - 1 for i, o in zip(in_size, out_size))


def quantized_upsample(x, size, stride, value_range):
    """The int8 graph's upsampling of ``x`` (on the 8-bit grid of ``value_range``) to
    ``size``: where the corners are aligned (:func:`corners_aligned`), one
    ``align_corners=True`` resize, which TFLite runs as one int8 RESIZE_BILINEAR that rounds
    once (as in the authors' own int8 files); elsewhere
    :func:`deeplab.model.quantize.quantized_stride_upsample`, which rounds after each of its
    differences, products and blends. Both sample the same points."""
    # pylint: disable=import-outside-toplevel
    # TensorFlow and the model code: conversion only, the TFLite runner works without them
    import tensorflow as tf

    from deeplab.model import quantize  # conversion only (Keras)

    if corners_aligned(x.shape[1:3], size, stride):
        resized = tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)
        return quantize.fake_quant(resized, *value_range)
    return quantize.quantized_stride_upsample(x, size, stride, value_range)


def convert_float(model, input_size, options=None):
    """float32 TFLite flatbuffer of ``model`` for uint8 pixels [1, H, W, 3] (see module doc);
    ``options``: the InferenceOptions whose scales and flip the graph averages."""
    # TensorFlow: conversion only, the TFLite runner works without it
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    function = _frozen_function(model, input_size, options, input_dtype=tf.uint8)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    return converter.convert()


def convert_int8(model, input_size, calibration_images, options=None):
    """Full-integer int8 TFLite flatbuffer; uint8 pixel input, int8 inside.

    Args:
      model: the Keras model.
      input_size: (H, W).
      calibration_images: uint8 [H, W, 3] arrays already of ``input_size`` (see
        :func:`calibration_images`); the representative dataset of post-training quantization.
      options: the InferenceOptions whose scales and flip the graph averages.

    Returns:
      bytes of the .tflite model.

    Raises:
      ConfigError: no calibration image, or one of another size.
    """
    # TensorFlow: conversion only, the TFLite runner works without it
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    if getattr(model, "quantize_aware", False):
        return _convert_quantize_aware(model, input_size, options)
    images = [np.asarray(i, np.uint8) for i in calibration_images or ()]
    if not images:
        raise ConfigError(
            "--quantize=int8 needs calibration images: pass --dataset_dir and "
            "--calibration_split with at least one image"
        )
    bad = [i.shape for i in images if i.shape != (*input_size, 3)]
    if bad:
        raise ConfigError(f"calibration images must be {input_size}; got {bad[0]}")
    # The float graph takes float32 pixels so that the converter quantizes the input tensor
    # itself (uint8 with the calibrated range) rather than keeping a float Cast.
    function = _frozen_function(
        model, input_size, options, input_dtype=tf.float32, feature_softmax=True
    )

    def representative_dataset():
        for image in images:
            yield [image[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter.convert()


def _convert_quantize_aware(model, input_size, options):
    """The int8 flatbuffer of a quantization-aware model: every range is the one it trained
    with (its fake-quantization ops), so no calibration image is read."""
    # TensorFlow: conversion only, the TFLite runner works without it
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    options = options or InferenceOptions()
    if options.scales != (1.0,) or options.flip or _feature_softmax_head(model) is None:
        raise ConfigError(
            "a --quantize_aware model exports int8 at one scale without flipping (its ranges "
            "are those of that graph): export it without --eval_scales / --eval_flip"
        )
    function = _frozen_function(
        model, input_size, options, input_dtype=tf.float32, feature_softmax=True
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    # The fake-quantization ops make this a quantization-aware graph: the converter takes every
    # range from them (it refuses supported_ops=INT8 without a representative dataset, so the
    # all-int8 graph is checked by tests instead).
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter.convert()


def calibration_images(dataset_dir, split, num_images, input_size, pad_value=None):
    """The first ``num_images`` images of a TFRecord split, letterboxed to ``input_size``.

    Returns:
      list of uint8 [H, W, 3].
    """
    # TensorFlow (tf.data): calibration only, the TFLite runner works without it
    from deeplab.data import input_pipeline  # pylint: disable=import-outside-toplevel

    pad_value = model_pad_value() if pad_value is None else pad_value
    dataset = input_pipeline.make_eval_dataset(dataset_dir, split, limit=int(num_images))
    images = []
    total = _split_size(dataset_dir, split, num_images)
    with Progress(total, f"read calibration images ({split})", unit="img") as bar:
        for example in dataset.as_numpy_iterator():
            images.append(letterbox(example["raw_image"], input_size, pad_value)[0])
            bar.update()
    return images


def _split_size(dataset_dir, split, limit=None):
    """Images a pass over ``split`` will read (dataset.json, capped by ``limit``), or None."""
    try:
        size = int(tfrecord.read_dataset_info(dataset_dir)["splits"][split])
    except (UserError, KeyError, TypeError, ValueError, OSError):
        return None
    return min(size, int(limit)) if limit else size


def sidecar_path(tflite_path):
    """``model.tflite`` -> ``model.json``."""
    root, _ = os.path.splitext(os.fspath(tflite_path))
    return root + ".json"


def write_tflite(path, content, metadata):
    """Writes a .tflite file and its JSON sidecar (each atomically, the sidecar last); returns
    the .tflite path."""
    atomic_io.write_bytes(path, content)
    atomic_io.write_json(sidecar_path(path), metadata)
    return path


def make_metadata(
    *, input_size, quantization, class_names, palette, options=None, ignore_label=255, extra=None
):
    """The sidecar dict of one of our exports (``options``: the InferenceOptions the graph
    averages the scales and flip of)."""
    options = options or InferenceOptions()
    return {
        "format": "deeplab-tflite",
        "input": "rgb_pixels",
        "input_size": list(input_size),
        "pad_value": list(model_pad_value()),
        "quantization": quantization,
        "class_names": list(class_names),
        "palette": [list(map(int, c)) for c in palette],
        "ignore_label": int(ignore_label),
        "scales": list(options.scales),
        "flip": options.flip,
        **(extra or {}),
    }


# ---------------------------------------------------------------------------------------------
# Running.
# ---------------------------------------------------------------------------------------------


def _make_interpreter(path, num_threads):
    try:
        # optional: the standalone LiteRT interpreter  pylint: disable-next=import-outside-toplevel
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        # TensorFlow's interpreter, only without ai_edge_litert
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        return Interpreter(model_path=path, num_threads=num_threads or None)


class TFLiteSegmenter:
    """Runs a DeepLab .tflite model (ours or the official ones) on images of any size.

    Args:
      path: the .tflite file; its sidecar ``.json``, if present, gives class names, palette
        and the pad value.
      num_threads: interpreter threads (None: the interpreter's default).

    Attributes:
      input_size: (H, W) the model takes.
      class_names, palette: from the sidecar (palette: PASCAL color map without one).

    Raises:
      UserError: the file is missing or not a TFLite model of the expected form.
    """

    def __init__(self, path, num_threads=None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise UserError(f"--model={path}: no such .tflite file")
        try:
            self.interpreter = _make_interpreter(path, num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise UserError(f"--model={path}: not a loadable TFLite model ({error})") from error
        self.path = path
        self.metadata = {}
        if os.path.isfile(sidecar_path(path)):
            with open(sidecar_path(path), encoding="utf-8") as f:
                self.metadata = json.load(f)
        inputs = self.interpreter.get_input_details()
        if (
            len(inputs) != 1
            or len(inputs[0]["shape"]) != 4
            or inputs[0]["shape"][3] != 3
            or inputs[0]["shape"][0] != 1
        ):
            raise UserError(
                f"--model={path}: expected one input of shape [1, H, W, 3], got "
                f"{[tuple(d['shape']) for d in inputs]}"
            )
        self._input = inputs[0]
        self.input_size = (int(self._input["shape"][1]), int(self._input["shape"][2]))
        outputs = self.interpreter.get_output_details()
        labels = [
            d for d in outputs if len(d["shape"]) == 3 and np.issubdtype(d["dtype"], np.integer)
        ]
        scores = [d for d in outputs if len(d["shape"]) == 4]
        if labels:
            self._output, self._argmax = labels[0], False
        elif scores:
            self._output, self._argmax = scores[0], True
        else:
            raise UserError(
                f"--model={path}: no class-map output [1, H, W] or score output "
                f"[1, H, W, C] among {[tuple(d['shape']) for d in outputs]}"
            )
        self.pad_value = tuple(self.metadata.get("pad_value", DEFAULT_PAD_VALUE))
        self.class_names = self.metadata.get("class_names")
        palette = self.metadata.get("palette")
        if palette is None:
            palette = color_map(256)
        self.palette = palette

    def _quantize(self, pixels):
        dtype = self._input["dtype"]
        scale, zero_point = self._input["quantization"]
        if dtype == np.float32:
            return pixels.astype(np.float32)
        pixels_domain = self.metadata.get("input") == "rgb_pixels"
        if pixels_domain and scale and (scale, zero_point) != (1.0, 0):
            info = np.iinfo(dtype)
            q = np.round(pixels.astype(np.float32) / scale + zero_point)
            return np.clip(q, info.min, info.max).astype(dtype)
        if dtype == np.uint8:
            return pixels
        if dtype == np.int8:
            return (pixels.astype(np.int16) - 128).astype(np.int8)
        raise UserError(f"{self.path}: unsupported input dtype {np.dtype(dtype).name}")

    def run(self, model_input):
        """Runs the interpreter on one input-size image: uint8 [H_in, W_in, 3] -> int32 labels."""
        feed = self._quantize(np.asarray(model_input, np.uint8)[None])
        self.interpreter.set_tensor(self._input["index"], feed)
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self._output["index"])[0]
        if self._argmax:
            output = np.argmax(output, axis=-1)
        return output.astype(np.int32)

    def __call__(self, image):
        """uint8 [H, W, 3] of any size -> int32 class map [H, W] (letterboxed, see module doc)."""
        image = np.asarray(image, np.uint8)
        model_input, inner = letterbox(image, self.input_size, self.pad_value)
        return unletterbox(self.run(model_input), inner, image.shape[:2])

    def probabilities(self, image):
        """uint8 [H, W, 3] -> (int32 class map [H, W], float32 scores [H, W, C]).

        The scores are the model's score output, dequantized (probabilities for our exports;
        the authors' files output class indices only, which is an error here).
        """
        image = np.asarray(image, np.uint8)
        scores = [
            d
            for d in self.interpreter.get_output_details()
            if len(d["shape"]) == 4 and d["shape"][-1] > 1
        ]
        if not scores:
            raise UserError(
                f"{self.path}: this TFLite model outputs class indices only, no probabilities"
            )
        labels = self(image)  # invokes the interpreter on this image
        raw = self.interpreter.get_tensor(scores[0]["index"])[0]
        scale, zero_point = scores[0]["quantization"]
        values = raw.astype(np.float32)
        if scale:
            values = (values - zero_point) * scale
        (h, w), (height, width) = letterbox(image, self.input_size, self.pad_value)[1], labels.shape
        # The same nearest-neighbour sampling as unletterbox, on every channel.
        rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(np.int64)
        cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(np.int64)
        return labels, values[:h, :w][rows[:, None], cols[None, :]]


class LetterboxedSegmenter:
    """Wraps an any-size segmenter so it sees what a fixed-size TFLite model sees.

    Used for the "float Keras at the TFLite geometry" row of the comparison, which isolates
    conversion error from resizing when images differ from the TFLite input size.
    """

    def __init__(self, segmenter, input_size, pad_value):
        self.segmenter, self.input_size, self.pad_value = segmenter, tuple(input_size), pad_value

    def __call__(self, image):
        image = np.asarray(image, np.uint8)
        model_input, inner = letterbox(image, self.input_size, self.pad_value)
        return unletterbox(self.segmenter(model_input), inner, image.shape[:2])


# ---------------------------------------------------------------------------------------------
# mIOU of several segmenters on one split, with the project's metrics code.
# ---------------------------------------------------------------------------------------------


def evaluate_segmenters(segmenters, dataset_dir, split, *, limit=None):
    """Confusion matrices, mIOU and agreement of segmenters over one split.

    Args:
      segmenters: dict name -> callable(uint8 [H, W, 3]) -> int32 [H, W]; the first is the
        reference for the agreement column.
      dataset_dir: TFRecord dataset directory (or tfds: spec).
      split: split name.
      limit: only the first N images (None: all).

    Returns:
      dict name -> {"miou", "pixel_accuracy", "agreement" (share of all pixels whose class
      equals the reference's), "confusion_matrix" (np.int64 [C, C]), "images"}.
    """
    # pylint: disable=import-outside-toplevel
    # TensorFlow (tf.data) and Keras: evaluation only, the TFLite runner works without them
    from deeplab.data import input_pipeline
    from deeplab.evaluation import metrics  # Keras: evaluation only

    info = tfrecord.read_dataset_info(dataset_dir)
    num_classes, ignore_label = info["num_classes"], info["ignore_label"]
    names = list(segmenters)
    matrices = {n: np.zeros((num_classes, num_classes), np.int64) for n in names}
    same = {n: 0 for n in names}
    pixels = 0
    count = 0
    dataset = input_pipeline.make_eval_dataset(dataset_dir, split, limit=limit or None)
    bar = Progress(
        _split_size(dataset_dir, split, limit),
        f"evaluate {len(names)} models on {split}",
        unit="img",
    )
    for example in dataset.as_numpy_iterator():
        bar.update()
        image, label = example["raw_image"], example["label"]
        reference = None
        for name in names:
            prediction = segmenters[name](image)
            if reference is None:
                reference = prediction
            same[name] += int((prediction == reference).sum())
            matrices[name] += np.asarray(
                metrics.confusion_matrix_update(label, prediction, num_classes, ignore_label),
                np.int64,
            )
        pixels += reference.size
        count += 1
    bar.close()
    if count == 0:
        raise UserError(f"--evaluate_split={split}: no images in {dataset_dir}")
    return {
        n: {
            "miou": metrics.mean_iou(matrices[n]),
            "pixel_accuracy": metrics.pixel_accuracy(matrices[n]),
            "agreement": same[n] / pixels,
            "confusion_matrix": matrices[n],
            "images": count,
        }
        for n in names
    }


def format_comparison(results):
    """A text table of :func:`evaluate_segmenters` results (percentages)."""
    names = list(results)
    width = max(len("model"), *(len(n) for n in names))
    agreement = f"same class as {names[0]} %"
    header = f"{'model':<{width}}  {'mIOU %':>7}  {'pixel acc %':>11}  {agreement:>10}"
    lines = [header, "-" * len(header)]
    for name in names:
        r = results[name]
        lines.append(
            f"{name:<{width}}  {100 * r['miou']:>7.2f}  "
            f"{100 * r['pixel_accuracy']:>11.2f}  {100 * r['agreement']:>10.3f}"
        )
    lines.append(f"({results[names[0]]['images']} images)")
    return "\n".join(lines)


__all__ = [
    "LetterboxedSegmenter",
    "TFLiteSegmenter",
    "calibration_images",
    "convert_float",
    "convert_int8",
    "corners_aligned",
    "evaluate_segmenters",
    "format_comparison",
    "letterbox",
    "make_metadata",
    "parse_input_size",
    "quantized_upsample",
    "sidecar_path",
    "unletterbox",
    "write_tflite",
]
