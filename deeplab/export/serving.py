"""Models that take raw images: the SavedModel serving module and in-process segmenters.

An exported DeepLab SavedModel owns all preprocessing, so a client sends pixels and gets
class maps back, whatever it was trained on::

    serving_default        images       uint8  [N, H, W, 3]  RGB, any H and W
                           -> semantic      int32   [N, H, W]     class per pixel
                              probabilities float32 [N, H, W, C]  averaged over scales / flips
    serve_encoded_images   image_bytes  string [N]  encoded JPEG / PNG / GIF / BMP / WebP
                           -> the same two outputs
    class_info             (no input)
                           -> class_names   string  [C]       read from assets/class_names.txt
                              palette       int32   [C, 3]

Inside every signature: ``deeplab.model.preprocessing.normalize_image`` (the one normalization),
the model at the export's output stride, softmax, and the export's multi-scale + flip
average (``deeplab.evaluation.inference.predict_probabilities``, Sec. 4.2); outputs are at the input
resolution.

Batching rule of ``serve_encoded_images``: all images of one call must decode to the same
height and width (one image per call always works); a call that mixes sizes fails with an
``InvalidArgumentError`` saying so. ``serving_default`` takes a dense batch, so its images
are one size by construction.

Input checks (what a caller sees is tested in tests/test_export.py and listed in
the README, "Serving the SavedModel"): a uint8 signature cannot receive another dtype as a tensor
(TensorFlow rejects the call: ``InvalidArgumentError ... expected to be a uint8 tensor but is a
float tensor``); numpy arrays are checked against the signature's shape (``TypeError``) and cast to
uint8 by TensorFlow before the graph runs. Tensors reach the graph with any shape, so it
asserts rank 4, at least one image, 3 channels and positive H, W with messages that name the
signature and the shape received, and caps the pixels of one call (N x H x W <= the export's
``max_pixels``, ``--serving_max_pixels``, default 4096 x 4096 = 16.8 M) so that one request
cannot take the server's memory. ``serve_encoded_images`` checks each input's leading bytes and
names the index of one that is not a JPEG, PNG, GIF, BMP or WebP file, then reads each image's
size from its header (:func:`deeplab.data.images.image_size_tf`) and refuses a call whose
headers declare more than the cap before anything is decoded; a file with a valid header but
damaged content fails with TensorFlow's decoder error. Decoded images follow the rules of
:mod:`deeplab.data.images` (EXIF orientation applied, alpha dropped, 16-bit reduced to the high
byte), as the converters and ``deeplab.predict`` do.

TensorFlow-only code (not part of the keras.ops model).
"""

import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from deeplab.common.errors import UserError
from deeplab.common.inference_options import InferenceOptions
from deeplab.data import images
from deeplab.data.datasets_info import color_map
from deeplab.evaluation import inference
from deeplab.evaluation.evaluator import Predictor
from deeplab.model.preprocessing import normalize_image

SERVING_DEFAULT = "serving_default"
ENCODED_SIGNATURE = "serve_encoded_images"
CLASS_INFO_SIGNATURE = "class_info"
CLASS_NAMES_FILE = "class_names.txt"
EXPORT_INFO_FILE = "deeplab_export.json"
# Pixels (N x H x W) one serving call may send: 16.8 M, a 4096 x 4096 image or 64 of 513 x 513.
DEFAULT_MAX_PIXELS = images.DEFAULT_MAX_PIXELS
# Leading bytes of the encoded formats tf.io.decode_image reads (WebP: "RIFF" and, at byte 8,
# "WEBP", see _is_known_format).
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
ENCODED_FORMATS = "JPEG, PNG, GIF, BMP or WebP"


def segment_images(model, images, options=None):
    """Pixels [N, H, W, 3] (uint8 or float 0..255) -> {"semantic": int32 [N, H, W],
    "probabilities": [N, H, W, C]}: normalization, (multi-scale, flipped, windowed) softmax
    (``options``, an :class:`~deeplab.common.inference_options.InferenceOptions`), argmax.

    What every serving path runs: the SavedModel signatures, KerasSegmenter and the graph
    deeplab.export.tflite converts.
    """
    probabilities = inference.predict_probabilities(model, normalize_image(images), options)
    semantic = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return {"semantic": semantic, "probabilities": probabilities}


def _check_images(images, where, max_pixels=0):
    """Run-time check of a uint8 image batch: rank 4, N > 0, 3 channels, H and W > 0, and
    N x H x W <= ``max_pixels`` (0: no cap).

    A loaded signature called with a tf.Tensor does not check its shape against the signature
    (numpy arrays are checked and cast), so the graph asserts it, with one message that names
    the signature, the rule and the shape received. The shape is read through
    ``placeholder_with_default(shape=None)``: the signature declares [?, ?, ?, 3], and Grappler
    would otherwise fold a rank or channel check on that static shape into "true" (a rank-3
    input then fails later with "slice index 3 of dimension 0 out of bounds", a rank-5 input
    not at all).
    """
    dynamic_shape = tf.shape(tf.compat.v1.placeholder_with_default(images, shape=None))
    padded = tf.concat([dynamic_shape, tf.zeros([4], tf.int32)], axis=0)[:4]
    valid = tf.logical_and(
        tf.equal(tf.size(dynamic_shape), 4),
        tf.logical_and(tf.equal(padded[3], 3), tf.reduce_all(padded[0:3] > 0)),
    )
    check = tf.debugging.Assert(
        valid,
        [
            f"{where} expects uint8 RGB images of shape [N, H, W, 3] with N, H, W > 0 (one image: "
            "add a leading batch dimension; grayscale or RGBA: convert to RGB first); got shape",
            dynamic_shape,
        ],
        summarize=8,
    )
    checks = [check]
    if max_pixels:
        pixels = tf.reduce_prod(tf.cast(padded[0:3], tf.int64))
        with tf.control_dependencies([check]):
            checks.append(
                tf.debugging.Assert(
                    pixels <= max_pixels,
                    [
                        f"{where}: N x H x W exceeds the cap of {int(max_pixels)} pixels "
                        "per call set at export (--serving_max_pixels); send fewer or smaller "
                        "images. Got shape",
                        dynamic_shape,
                    ],
                    summarize=8,
                )
            )
    with tf.control_dependencies(checks):
        return tf.identity(images)


def _is_known_format(data):
    """Whether one encoded string starts like a file tf.io.decode_image reads."""
    webp = tf.logical_and(
        tf.equal(tf.strings.substr(data, 0, 4), b"RIFF"),
        tf.equal(tf.strings.substr(tf.strings.join([data, b"\x00" * 12]), 8, 4), b"WEBP"),
    )
    magics = [tf.equal(tf.strings.substr(data, 0, len(magic)), magic) for magic in _IMAGE_MAGIC]
    return tf.reduce_any(tf.stack([*magics, webp]))


def _check_headers(image_bytes, max_pixels):
    """Asserts, before anything is decoded, that every image's header declares its size
    (:func:`deeplab.data.images.image_size_tf`) and that the declared pixels of the call (the
    sum of H x W) are within ``max_pixels``: a small file that would decode to a huge image
    (a "decompression bomb") is refused from its first bytes. Returns the checks (none without
    a cap)."""
    if not max_pixels:
        return []
    sizes = tf.map_fn(
        images.image_size_tf, image_bytes, fn_output_signature=tf.TensorSpec([2], tf.int64)
    )
    readable = tf.logical_or(
        tf.reduce_all(sizes >= 0, axis=1),
        tf.logical_not(tf.map_fn(_is_known_format, image_bytes, fn_output_signature=tf.bool)),
    )
    first_bad = tf.argmin(tf.cast(readable, tf.int32), output_type=tf.int32)
    check = tf.debugging.Assert(
        tf.reduce_all(readable),
        [
            f"{ENCODED_SIGNATURE}: cannot read the image size from the header of image_bytes index",
            first_bad,
            "(a damaged file, or one its format's decoder would not read); nothing was decoded",
        ],
    )
    pixels = tf.reduce_sum(tf.reduce_prod(tf.maximum(sizes, 0), axis=1))
    with tf.control_dependencies([check]):
        cap = tf.debugging.Assert(
            pixels <= max_pixels,
            [
                f"{ENCODED_SIGNATURE}: the images' headers declare",
                pixels,
                f"pixels (the sum of H x W), above the cap of {int(max_pixels)} pixels per call "
                "set at export (--serving_max_pixels); nothing was decoded. Send fewer or "
                "smaller images. H, W by image_bytes index:",
                sizes,
            ],
            summarize=16,
        )
    return [check, cap]


def _decode_checked(image_bytes, index):
    """tf.io.decode_image of ``image_bytes[index]`` after checking its leading bytes, so that a
    file that is not an image is named by its index."""
    data = image_bytes[index]
    known = _is_known_format(data)
    check = tf.debugging.Assert(
        known,
        [
            f"{ENCODED_SIGNATURE}: not a {ENCODED_FORMATS} file: image_bytes index",
            index,
            "of",
            tf.size(image_bytes),
            "starts with",
            tf.strings.substr(data, 0, 8),
        ],
        summarize=8,
    )
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    # The EXIF orientation rule of every binary (deeplab.data.images): the pixels a viewer shows.
    return tf.ensure_shape(
        images.apply_orientation_tf(image, images.exif_orientation_tf(data)), [None, None, 3]
    )


class SegmentationModule(tf.Module):
    """A tf.Module holding a DeepLab Keras model and serving it on raw uint8 images.

    Args:
      model: a Keras model from normalized images to logits (a ``DeepLabV3`` with
        ``upsample_logits=True``, so logits come back at the input size).
      class_names: one name per class index; written to ``assets/class_names.txt``.
      palette: one [r, g, b] per class, for colorizing; None uses the PASCAL color map.
      options: the :class:`~deeplab.common.inference_options.InferenceOptions` baked into the
        graph: scales and flips averaged (Sec. 4.2), windows (its ``output_stride`` is the
        model's, as built).
      export_info: JSON-able dict written to ``assets/deeplab_export.json`` (model config,
        checkpoint, output stride...), for people and tools that inspect the export.
      max_pixels: most pixels (N x H x W) one call may send; 0: no cap.
    """

    def __init__(
        self,
        model,
        *,
        class_names,
        palette=None,
        options=None,
        export_info=None,
        max_pixels=DEFAULT_MAX_PIXELS,
    ):
        super().__init__(name="deeplab_serving")
        num_classes = int(model.output_shape[-1])
        class_names = [str(n) for n in class_names]
        if len(class_names) != num_classes:
            raise ValueError(
                f"{len(class_names)} class names for a model with {num_classes} "
                "classes; pass one name per class"
            )
        if any("\n" in n for n in class_names):
            raise ValueError("class names must not contain newlines")
        if palette is None:
            palette = color_map(num_classes)
        palette = np.asarray(palette, np.int32).reshape(-1, 3)[:num_classes]
        if len(palette) != num_classes:
            raise ValueError(f"the palette has {len(palette)} colors for {num_classes} classes")
        self.model = model
        self.num_classes = num_classes
        self.options = options or InferenceOptions()
        self.max_pixels = int(max_pixels or 0)
        if self.max_pixels < 0:
            raise ValueError(f"max_pixels must be >= 0 (0: no cap), got {max_pixels}")
        self._palette = tf.constant(palette, tf.int32)
        # Assets are copied into the SavedModel at save time; these temporary files only
        # need to live until then (see save()).
        self._asset_dir = tempfile.TemporaryDirectory(prefix="deeplab_assets_")
        names_path = os.path.join(self._asset_dir.name, CLASS_NAMES_FILE)
        with open(names_path, "w", encoding="utf-8") as f:
            f.write("\n".join(class_names) + "\n")
        info = {
            "num_classes": num_classes,
            "class_names": class_names,
            "palette": palette.tolist(),
            "scales": list(self.options.scales),
            "flip": self.options.flip,
            "tile_size": list(self.options.tile_size) if self.options.tile_size else None,
            "tile_overlap": self.options.tile_overlap if self.options.tile_size else None,
            "max_pixels_per_call": self.max_pixels or None,
            "signatures": {
                SERVING_DEFAULT: "uint8 images [N, H, W, 3]",
                ENCODED_SIGNATURE: "encoded images [N], all one size",
                CLASS_INFO_SIGNATURE: "class names and palette",
            },
            **(export_info or {}),
        }
        info_path = os.path.join(self._asset_dir.name, EXPORT_INFO_FILE)
        with open(info_path, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, sort_keys=True)
        self.class_names_file = tf.saved_model.Asset(names_path)
        self.export_info_file = tf.saved_model.Asset(info_path)

    def segment(self, images):
        """uint8 [N, H, W, 3] -> {"semantic": int32 [N, H, W], "probabilities": [N, H, W, C]}."""
        return segment_images(self.model, images, self.options)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_images(self, images):
        """Segments a batch of uint8 RGB images of one size (any H and W)."""
        return self.segment(_check_images(images, SERVING_DEFAULT, self.max_pixels))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_encoded_images(self, image_bytes):
        """Decodes JPEG/PNG/GIF/BMP/WebP bytes (all of one size) and segments them; the pixels
        their headers declare are checked against the cap before any decoding."""
        count = tf.size(image_bytes)
        assert_some = tf.debugging.assert_positive(
            count, message=f"{ENCODED_SIGNATURE}: send at least one encoded image"
        )
        with tf.control_dependencies([assert_some]):
            headers = _check_headers(image_bytes, self.max_pixels)
        with tf.control_dependencies([assert_some, *headers]):
            first = _decode_checked(image_bytes, 0)
        first_size = tf.shape(first)[:2]
        decoded = tf.TensorArray(
            tf.uint8, size=count, element_shape=tf.TensorShape([None, None, 3])
        )
        decoded = decoded.write(0, first)
        for i in tf.range(1, count):
            image = _decode_checked(image_bytes, i)
            same = tf.debugging.assert_equal(
                tf.shape(image)[:2],
                first_size,
                message=(
                    f"{ENCODED_SIGNATURE}: all images in one call must have the same "
                    "height and width (the first image's size vs. this one's follow); "
                    "send images of different sizes in separate calls"
                ),
            )
            with tf.control_dependencies([same]):
                decoded = decoded.write(i, tf.identity(image))
        images = tf.ensure_shape(decoded.stack(), [None, None, None, 3])
        return self.segment(_check_images(images, ENCODED_SIGNATURE, self.max_pixels))

    @tf.function(input_signature=[])
    def class_info(self):
        """Class names (from the assets file, index order) and the palette."""
        text = tf.strings.strip(tf.io.read_file(self.class_names_file))
        return {"class_names": tf.strings.split(text, "\n"), "palette": self._palette}

    def signatures(self):
        """The signature dict for ``tf.saved_model.save``."""
        return {
            SERVING_DEFAULT: self.serve_images.get_concrete_function(),
            ENCODED_SIGNATURE: self.serve_encoded_images.get_concrete_function(),
            CLASS_INFO_SIGNATURE: self.class_info.get_concrete_function(),
        }

    def save(self, export_dir):
        """Writes the SavedModel (signatures above, assets/) to ``export_dir``; returns it.

        What is saved is lean (issue 22): the signatures' graphs once each, a flat list of the
        model's variables and the assets, not the Keras object tree. Saving this module itself
        would also write every layer as an object (3,785 nodes for ResNet-101) and each
        signature's function twice (as a signature and as a method); a server then holds all of
        it: 149 MiB of RSS at load, before the weights, for the paper's model.
        """
        signatures = self.signatures()
        root = tf.Module(name="deeplab_serving")
        # The variables the graphs read, as plain tf.Variables (a Keras variable wraps one).
        root.weights = [getattr(v, "value", v) for v in self.model.weights]
        root.class_names_file = self.class_names_file
        root.export_info_file = self.export_info_file
        tf.saved_model.save(root, export_dir, signatures=signatures)
        return export_dir


def export_saved_model(
    model,
    export_dir,
    *,
    class_names,
    palette=None,
    options=None,
    export_info=None,
    max_pixels=DEFAULT_MAX_PIXELS,
):
    """Exports ``model`` as a SavedModel that takes raw images (see the module docstring).

    Args:
      model: a DeepLabV3 (``upsample_logits=True``) holding trained weights.
      export_dir: folder to write; created, and overwritten if it holds a SavedModel.
      class_names, palette, options, export_info, max_pixels: see :class:`SegmentationModule`
        (tiling runs inside the exported graph).

    Returns:
      ``export_dir``.
    """
    module = SegmentationModule(
        model,
        class_names=class_names,
        palette=palette,
        options=options,
        export_info=export_info,
        max_pixels=max_pixels,
    )
    return module.save(export_dir)


# ---------------------------------------------------------------------------------------------
# Segmenters: one image in (uint8 [H, W, 3]), one class map out (int32 [H, W]). predict and
# the TFLite mIOU comparison call these, so every backend is driven the same way.
# ---------------------------------------------------------------------------------------------


class KerasSegmenter:
    """Runs a Keras DeepLab model in this process, exactly as the serving signature does.

    Args:
      model: a DeepLabV3 with ``upsample_logits=True``.
      options: the :class:`~deeplab.common.inference_options.InferenceOptions` (multi-scale +
        flip average of Sec. 4.2, windows, padding; its ``output_stride`` is the model's).
      class_names, palette: metadata for writers (may be None).
    """

    def __init__(self, model, options=None, *, class_names=None, palette=None):
        self.model = model
        self.options = options or InferenceOptions()
        self.class_names = class_names
        self.palette = palette
        # Tiled: evaluation's Predictor runs the windows through one traced graph and keeps the
        # loop and the [H, W, C] accumulator eager in NumPy, so memory is bounded by one window.
        self._tiled = None
        if self.options.tile_size:
            self._tiled = Predictor(model, self.options)
        self._fn_both = None  # traced on the first probabilities() call
        self._fn = tf.function(
            self._segment,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
            reduce_retracing=True,
        )

    def _segment(self, images):
        return segment_images(self.model, images, self.options)["semantic"]

    def _both(self, images):
        return segment_images(self.model, images, self.options)

    def probabilities(self, image):
        """uint8 [H, W, 3] -> (int32 class map [H, W], float32 probabilities [H, W, C])."""
        pixels = np.asarray(image, np.uint8)
        if self._tiled is not None:
            probabilities = np.asarray(self._tiled.probabilities(normalize_image(pixels)))
            return np.argmax(probabilities, axis=-1).astype(np.int32), probabilities
        if self._fn_both is None:
            self._fn_both = tf.function(
                self._both,
                input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
                reduce_retracing=True,
            )
        out = self._fn_both(tf.convert_to_tensor(pixels[None]))
        return out["semantic"][0].numpy(), out["probabilities"][0].numpy()

    def __call__(self, image):
        """uint8 [H, W, 3] -> int32 class map [H, W]."""
        pixels = np.asarray(image, np.uint8)
        if self._tiled is not None:
            return np.asarray(self._tiled.labels(normalize_image(pixels)))
        return self._fn(tf.convert_to_tensor(pixels[None]))[0].numpy()


def load_saved_model(export_dir):
    """tf.saved_model.load, with a damaged export (a corrupt or truncated saved_model.pb, a
    truncated or missing variables file) as one UserError naming the folder."""
    try:
        return tf.saved_model.load(export_dir)
    except (OSError, IndexError, KeyError, ValueError, tf.errors.OpError) as error:
        text = str(getattr(error, "message", None) or error).strip()
        lines = [line for line in text.splitlines() if line.strip()] or [type(error).__name__]
        part = "saved_model.pb" if "saved_model.pb" in lines[0] else "variables/"
        raise UserError(
            f"--model={export_dir}: cannot load the SavedModel: {part} is damaged or "
            f"incomplete ({lines[0][-160:]}); export it again"
        ) from None


def export_max_pixels(export_dir):
    """The pixel cap per call an export was written with (its assets/deeplab_export.json), or
    :data:`DEFAULT_MAX_PIXELS` when it does not say; 0: none."""
    try:
        with open(os.path.join(export_dir, "assets", EXPORT_INFO_FILE), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return DEFAULT_MAX_PIXELS
    value = info.get("max_pixels_per_call", DEFAULT_MAX_PIXELS)
    return int(value or 0)


class SavedModelSegmenter:
    """Runs an exported SavedModel's ``serving_default`` signature, one image per call.

    Args:
      export_dir: a folder written by ``deeplab.export_saved_model``.

    Raises:
      UserError: the folder is not a SavedModel or lacks the signature.
    """

    def __init__(self, export_dir):
        if not tf.saved_model.contains_saved_model(export_dir):
            raise UserError(
                f"--model={export_dir}: no saved_model.pb there; pass a folder "
                "written by deeplab.export_saved_model, a .tflite file, or "
                "--checkpoint"
            )
        self._loaded = load_saved_model(export_dir)
        signatures = self._loaded.signatures
        if SERVING_DEFAULT not in signatures:
            raise UserError(
                f"--model={export_dir}: the SavedModel has no {SERVING_DEFAULT!r} "
                f"signature (it has {sorted(signatures)})"
            )
        self._serve = signatures[SERVING_DEFAULT]
        self.max_pixels = export_max_pixels(export_dir)
        self.class_names = None
        self.palette = None
        if CLASS_INFO_SIGNATURE in signatures:
            info = signatures[CLASS_INFO_SIGNATURE]()
            self.class_names = [n.decode("utf-8") for n in info["class_names"].numpy()]
            self.palette = info["palette"].numpy().tolist()

    def __call__(self, image):
        """uint8 [H, W, 3] -> int32 class map [H, W]."""
        batch = tf.convert_to_tensor(np.asarray(image, np.uint8)[None])
        return self._serve(images=batch)["semantic"][0].numpy()

    def probabilities(self, image):
        """uint8 [H, W, 3] -> (int32 class map [H, W], float32 probabilities [H, W, C])."""
        batch = tf.convert_to_tensor(np.asarray(image, np.uint8)[None])
        out = self._serve(images=batch)
        return out["semantic"][0].numpy(), out["probabilities"][0].numpy()


__all__ = [
    "CLASS_INFO_SIGNATURE",
    "CLASS_NAMES_FILE",
    "ENCODED_SIGNATURE",
    "EXPORT_INFO_FILE",
    "KerasSegmenter",
    "SERVING_DEFAULT",
    "SavedModelSegmenter",
    "SegmentationModule",
    "export_saved_model",
]
