"""The TensorFlow Datasets adapter: ``tfds:NAME?key=value`` specs as segmentation datasets.

A spec names a TFDS builder and, where its features are not the usual ones, which feature is the
image, the mask and the file name, plus an optional label map. :func:`tfds_dataset_info` gives the
``dataset.json``-style description; :func:`load` the encoded examples and their decoder, which
``deeplab.data.input_pipeline`` feeds through the same augmentation as TFRecord datasets.
"""

import dataclasses
import urllib.parse

import numpy as np
import tensorflow as tf

from deeplab.common.errors import ConfigError, DataError
from deeplab.data import datasets_info

TFDS_PREFIX = "tfds:"


# ---------------------------------------------------------------------------------------------
# TFDS adapter.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TfdsSource:
    """A TFDS dataset seen as a segmentation dataset (see the module docstring for the spec
    syntax)."""

    name: str
    image_key: str = None
    label_key: str = None
    filename_key: str = None
    label_map: object = None  # dict raw -> class, or None for identity
    num_classes: int = None
    ignore_label: int = datasets_info.IGNORE_LABEL
    class_names: tuple = None
    data_dir: str = None
    download: bool = False


def _preset(name):
    base = name.split(":")[0]
    if base == "oxford_iiit_pet":
        return dict(
            image_key="image",
            label_key="segmentation_mask",
            filename_key="file_name",
            label_map={1: 1, 2: 0, 3: datasets_info.IGNORE_LABEL},
            num_classes=2,
            class_names=("background", "pet"),
        )
    if base.split("/")[0] == "cityscapes":
        lut = datasets_info.cityscapes_label_id_to_train_id()
        spec = datasets_info.cityscapes()
        return dict(
            image_key="image_left",
            label_key="segmentation_label",
            filename_key="image_id",
            label_map={i: int(v) for i, v in enumerate(lut) if v >= 0},
            num_classes=spec.num_classes,
            class_names=spec.class_names,
        )
    return {}


def _parse_label_map(text, spec):
    mapping = {}
    for item in filter(None, text.split(",")):
        try:
            raw, cls = item.split(":")
            mapping[int(raw)] = int(cls)
        except ValueError:
            raise ConfigError(f"{spec}: label_map must look like 1:1,2:0,3:255, got item "
                              f"{item!r}") from None
    return mapping


def parse_tfds_spec(spec, *, label_map=None, num_classes=None, data_dir=None):
    """Parses ``tfds:NAME[?key=value&...]`` into a :class:`TfdsSource` (presets filled in)."""
    if not spec.startswith(TFDS_PREFIX):
        raise ConfigError(f"{spec!r} is not a TFDS spec (tfds:NAME[?options])")
    body = spec[len(TFDS_PREFIX) :]
    name, _, query = body.partition("?")
    if not name:
        raise ConfigError(f"{spec!r}: missing the TFDS dataset name after 'tfds:'")
    fields = _preset(name)
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key == "image":
            fields["image_key"] = value
        elif key == "label":
            fields["label_key"] = value
        elif key == "filename":
            fields["filename_key"] = value
        elif key == "label_map":
            fields["label_map"] = _parse_label_map(value, spec)
        elif key == "num_classes":
            fields["num_classes"] = int(value)
        elif key == "ignore_label":
            fields["ignore_label"] = int(value)
        elif key == "class_names":
            fields["class_names"] = tuple(value.split(","))
        elif key == "data_dir":
            fields["data_dir"] = value
        elif key == "download":
            fields["download"] = value not in ("0", "false", "False", "")
        else:
            raise ConfigError(
                f"{spec}: unknown option {key!r}; known: image, label, filename, label_map, "
                f"num_classes, ignore_label, class_names, data_dir, download"
            )
    if label_map is not None:
        if isinstance(label_map, dict):
            fields["label_map"] = {int(k): int(v) for k, v in label_map.items()}
        else:
            fields["label_map"] = {i: int(v) for i, v in enumerate(label_map) if int(v) >= 0}
    if data_dir is not None:
        fields["data_dir"] = data_dir
    source = TfdsSource(name=name, **fields)
    if source.num_classes is None:
        if num_classes is None:
            raise ConfigError(f"{spec}: give num_classes (in the spec, ?num_classes=N, or as an "
                              "argument)")
        source.num_classes = int(num_classes)
    if source.class_names is None:
        source.class_names = tuple(f"class_{i}" for i in range(source.num_classes))
    return source


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # heavy: only tfds: sources need it
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ConfigError("tfds: datasets need the tensorflow-datasets package (pip install "
                          "tensorflow-datasets)") from e
    return tfds


def _resolve_feature_keys(source, builder):
    """Fills image/label feature keys from the builder's features when the spec leaves them out."""
    tfds = _import_tfds()
    features = builder.info.features
    images = {k: f for k, f in features.items() if isinstance(f, tfds.features.Image)}
    if source.image_key is None:
        rgb = [k for k, f in images.items() if f.shape[-1] == 3]
        if len(rgb) != 1:
            raise ConfigError(f"tfds:{source.name}: cannot tell the image feature among "
                              f"{sorted(features)}; add ?image=KEY")
        source.image_key = rgb[0]
    if source.label_key is None:
        masks = [k for k, f in images.items() if f.shape[-1] == 1]
        if len(masks) != 1:
            raise ConfigError(f"tfds:{source.name}: cannot tell the mask feature among "
                              f"{sorted(features)}; add ?label=KEY")
        source.label_key = masks[0]
    for key in (source.image_key, source.label_key):
        if key not in features:
            raise ConfigError(f"tfds:{source.name}: no feature {key!r}; features: "
                              f"{sorted(features)}")
    if source.filename_key is not None and source.filename_key not in features:
        source.filename_key = None


def _tfds_builder(source):
    tfds = _import_tfds()
    try:
        return tfds.builder(source.name, data_dir=source.data_dir)
    except Exception as e:  # tfds raises several types for unknown names
        raise ConfigError(f"tfds:{source.name}: not a TFDS dataset ({e})") from e


def tfds_dataset_info(spec, **kwargs):
    """dataset.json-style dict for a ``tfds:`` spec (splits from the builder's info when it is
    prepared)."""
    source = parse_tfds_spec(spec, **kwargs)
    builder = _tfds_builder(source)
    splits = {name: int(s.num_examples) for name, s in builder.info.splits.items()}
    palette = datasets_info.color_map(source.num_classes)
    if source.name.split("/")[0] == "cityscapes":
        palette = datasets_info.cityscapes().palette
    return {
        "name": source.name,
        "num_classes": source.num_classes,
        "ignore_label": source.ignore_label,
        "class_names": list(source.class_names),
        "palette": [list(c) for c in palette],
        "splits": splits,
    }


def _label_lut(source):
    """int32 [256] lookup table raw mask value -> class (ignore label for unmapped values)."""
    if source.label_map is None:
        return None
    lut = np.full(256, source.ignore_label, np.int32)
    for raw, cls in source.label_map.items():
        if not (0 <= cls < source.num_classes or cls == source.ignore_label):
            raise ConfigError(
                f"tfds:{source.name}: label_map sends {raw} to {cls}, outside "
                f"[0, {source.num_classes}) and not the ignore label {source.ignore_label}"
            )
        lut[raw] = cls
    return tf.constant(lut)


def load(source, split, *, shuffle_files, seed, input_context):
    """TFDS examples, still encoded where TFDS allows it, and the function that decodes one.

    Returns:
      (dataset of TFDS example dicts, ``decode(example) -> {"image", "label", "filename"}``), so
      that shuffling and bootstrapping hold encoded bytes, not decoded images.
    """
    tfds = _import_tfds()
    builder = _tfds_builder(source)
    _resolve_feature_keys(source, builder)
    read_config = tfds.ReadConfig(shuffle_seed=seed, input_context=input_context)
    decoders = {source.image_key: tfds.decode.SkipDecoding(),
                source.label_key: tfds.decode.SkipDecoding()}
    try:
        ds = tfds.load(
            source.name,
            split=split,
            data_dir=source.data_dir,
            download=source.download,
            shuffle_files=shuffle_files,
            read_config=read_config,
            decoders=decoders,
        )
    except (AssertionError, FileNotFoundError, ValueError) as e:
        raise DataError(
            f"tfds:{source.name} split {split!r}: cannot load ({e}). Prepare it first (tfds build "
            f"{source.name}) or add ?download=1."
        ) from e
    lut = _label_lut(source)

    def to_raw(example):
        image = example[source.image_key]
        label = example[source.label_key]
        if image.dtype == tf.string:
            image = tf.io.decode_image(image, channels=3, expand_animations=False)
        if label.dtype == tf.string:
            label = tf.io.decode_png(label, channels=1)
        image = tf.ensure_shape(image, [None, None, 3])
        label = tf.cast(tf.reshape(label, tf.shape(label)[:2]), tf.int32)
        if lut is not None:
            label = tf.gather(lut, label)
        filename = example[source.filename_key] if source.filename_key else tf.constant("")
        return {"image": image, "label": label, "filename": filename}

    return ds, to_raw
