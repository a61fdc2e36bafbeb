"""``deeplab.load``: any model of this project as one segmenter, from Python.

    import deeplab

    seg = deeplab.load("weights/mnv2_pascal")        # a run, an export, a .tflite, an import
    labels = seg.predict("photo.jpg")                   # int32 [H, W], the photo's size
    labels, probs = seg.predict(image, probabilities=True)
    picture = seg.overlay("photo.jpg", labels)          # uint8 RGB with a legend
    seg.classes, seg.colors, seg.card                   # names, [C, 3] colours, the model card

What ``path`` may be, and what runs it:

=============================  ===========================================================
a training logdir, a           Keras in this process (BN folded); ``scales``, ``flip``,
checkpoint prefix, an import   ``tile_size`` / ``tile_overlap`` and ``output_stride`` apply
of deeplab.import_official     (or one ``options=InferenceOptions(...)``)
a SavedModel folder            its ``serving_default`` signature (the export fixed its scales,
(deeplab.export_saved_model)   flip, tiling and output stride: passing others is an error)
a ``.tflite`` file             the TFLite interpreter (images letterboxed to its input size)
=============================  ===========================================================

Images: a path (read by the project's one image reader, :mod:`deeplab.data.images`: EXIF
orientation applied, alpha dropped, 16-bit reduced), the file's bytes, a PIL image (taken as its
pixels are: PIL does not apply EXIF orientation), or a uint8 array [H, W, 3] (grayscale [H, W]
and RGBA [H, W, 4] are converted). A list gives a list.
"""

import os

import numpy as np

from deeplab.common.errors import UserError
from deeplab.common.inference_options import InferenceOptions
from deeplab.data import datasets_info
from deeplab.data import images as image_io
from deeplab.evaluation import visualization
from deeplab.export import model_card
from deeplab.export import predictor


def load(
    path,
    *,
    scales=(1.0,),
    flip=False,
    tile_size=None,
    tile_overlap=0.25,
    output_stride=0,
    num_threads=0,
    options=None,
):
    """Opens a model of this project as a :class:`Segmenter` (see the module docstring).

    The inference settings are the keywords ``scales``, ``flip``, ``tile_size``,
    ``tile_overlap`` and ``output_stride``, or one ``options``
    (:class:`~deeplab.common.inference_options.InferenceOptions`) instead of them.

    Raises:
      UserError: nothing loadable at ``path`` (one line naming it), inference options given
        for an export that fixed its own, or both ``options`` and the keywords.
    """
    path = os.fspath(path)
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise UserError(f"deeplab.load({path!r}): no such file or folder")
    keywords = InferenceOptions(
        scales=scales,
        flip=flip,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        output_stride=output_stride or None,
    )
    if options is not None and not keywords.is_default:
        raise UserError(
            f"deeplab.load({path!r}): pass the inference settings as options=... or as "
            "keywords, not both"
        )
    options = options or keywords
    is_export = (
        path.endswith(".tflite")
        or os.path.isfile(path)
        or os.path.exists(os.path.join(path, "saved_model.pb"))
    )
    if is_export and not options.is_default:
        raise UserError(
            f"deeplab.load({path!r}): an export runs the scales, flip, tiling and output stride "
            "it was exported with; pass those options to deeplab.export_saved_model, or load the "
            "training run instead"
        )
    runner = predictor.make_segmenter(
        model=path if is_export else None,
        checkpoint=None if is_export else path,
        options=options,
        num_threads=num_threads,
    )
    kind = "tflite" if path.endswith(".tflite") else ("saved_model" if is_export else "keras")
    return Segmenter(runner, path=path, kind=kind, card=find_card(path, runner))


def find_card(path, runner):
    """The model card of what ``path`` names: the card file of its folder (an export, an
    import, or the export folder of a .tflite file), else one built from a training run's
    recorded files (``runner`` from :func:`deeplab.export.predictor.make_segmenter`), else None.
    """
    folder = os.path.dirname(path) if os.path.isfile(path) else path
    card = model_card.read_card(folder) if os.path.isdir(folder or ".") else None
    if card is None and hasattr(runner, "run_info"):
        card = model_card.card_for_run(runner.run_info, runner.model)
    return card


def as_rgb(image):
    """One image (path, bytes, PIL image or array) as uint8 [H, W, 3] by the reader's rules."""
    if isinstance(image, (str, os.PathLike)):
        return image_io.read_rgb(os.fspath(image))[0]
    if isinstance(image, (bytes, bytearray)):
        return image_io.read_rgb(bytes(image), path="image bytes")[0]
    if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
        image.load()
        return image_io.to_rgb(image, "PIL image")[0]
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise UserError(
            f"images must be uint8 pixels 0..255, got dtype {array.dtype} (convert with "
            "np.clip(x, 0, 255).astype(np.uint8) if they are in that range)"
        )
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    elif array.ndim == 3 and array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3 or min(array.shape[:2]) < 1:
        raise UserError(f"expected an image [H, W, 3] (or [H, W], [H, W, 4]), got {array.shape}")
    return np.ascontiguousarray(array)


class Segmenter:
    """A loaded model: images in, label maps out (see :func:`load`).

    Attributes:
      path, kind: what was loaded ("keras", "saved_model" or "tflite").
      classes: class names, index order.
      colors: uint8 [C, 3], a colour per class (the dataset's palette).
      ignore_label: the label value that is no class (255 unless the dataset says otherwise).
      background: index of the background class left unpainted in overlays, or None.
      card: the model card (dict; see :mod:`deeplab.export.model_card`), or None for an export
        written before cards existed.
    """

    def __init__(self, runner, *, path, kind, card=None):
        self._runner = runner
        self.path, self.kind, self.card = path, kind, card
        names = getattr(runner, "class_names", None)
        if not names and card:
            names = [c["name"] for c in card.get("classes", [])]
        palette = getattr(runner, "palette", None)
        if palette is None and card:
            palette = [c["color"] for c in card.get("classes", [])]
        num = len(names) if names else (len(palette) if palette is not None else 256)
        self.classes = list(names) if names else [f"class_{i}" for i in range(num)]
        if palette is None or len(palette) < len(self.classes):
            palette = datasets_info.color_map(len(self.classes))
        self.colors = np.asarray(palette, np.uint8).reshape(-1, 3)[: len(self.classes)]
        self.ignore_label = int((card or {}).get("ignore_label", 255))
        self.background = visualization.background_class(self.classes)

    def __repr__(self):
        return f"<deeplab Segmenter {self.kind} {self.path!r}: {self.summary()}>"

    def summary(self):
        """One line: the card's summary, or the class count when the model has no card."""
        if self.card:
            return model_card.summary(self.card)
        return f"{len(self.classes)} classes, no model card"

    def predict(self, images, probabilities=False):
        """Label maps of one image or a list (see the module docstring for what an image is).

        Returns:
          int32 [H, W] (the image's size), or with ``probabilities=True`` a pair (labels,
          float32 [H, W, C]); a list of those for a list.
        """
        if isinstance(images, (list, tuple)):
            return [self.predict(image, probabilities) for image in images]
        pixels = as_rgb(images)
        if probabilities:
            labels, probs = self._runner.probabilities(pixels)
            return np.asarray(labels, np.int32), np.asarray(probs, np.float32)
        return np.asarray(self._runner(pixels), np.int32)

    def classes_found(self, labels):
        """[{"index", "name", "share"}] of the classes in ``labels``, most pixels first."""
        return visualization.class_shares(labels, self.classes, self.ignore_label)

    def overlay(self, image, labels=None, alpha=0.6):
        """The photo with the classes found painted over it and a legend (uint8 RGB); the
        background class, if the dataset has one, is left unpainted. Predicts when ``labels``
        is None."""
        pixels = as_rgb(image)
        if labels is None:
            labels = self.predict(pixels)
        return visualization.legend_overlay(
            pixels,
            labels,
            self.colors,
            self.classes,
            ignore_label=self.ignore_label,
            background=self.background,
            alpha=alpha,
        )


__all__ = ["Segmenter", "as_rgb", "find_card", "load"]
