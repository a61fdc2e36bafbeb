"""The dataset doctor: what a dataset holds, and what would spoil training on it, before training.

``python -m deeplab.inspect_dataset`` is this module with flags. It reads a converted dataset
(records + dataset.json, :func:`observe_records`) or a raw one before conversion, with the
converters' own listing and readers (:func:`observe_raw`: ``raw_datasets.*_examples`` and
``convert.read_png_label`` / ``read_sbd_label`` / ``render_coco_label``), into one
:class:`Observation` per example, then :func:`diagnose` reports per split (images, sizes, a
table of pixels and images per class, imbalance, missing classes) and lists

- **errors** (``error:`` lines; the binary exits 1): label values outside
  ``[0, num_classes)`` that are not the ignore label, label files that will be misread or
  refused (RGB colour masks, palette or 16-bit PNGs where index PNGs are expected; in records,
  any label PNG the pipeline does not read as its class indices), image/label size mismatches,
  missing label files, a split without labels, unreadable files;
- **warnings** (``warning:``): labels without an image, exact duplicate images, classes missing
  from a split, and heuristics about the label convention (1-based labels, 0 used as "ignore",
  a class absent from the training split).

Each line names the count and the first files. Nothing is written to the dataset.
:func:`contact_sheet` draws image/label overlays chosen (greedy set cover) so that every class
that occurs appears at least once, with a legend of class names and colours.
"""

import collections
import dataclasses
import hashlib
import io
import os

import numpy as np

from deeplab.common import atomic_io
from deeplab.common.errors import ConfigError, DataError
from deeplab.data import class_weights as class_weights_lib
from deeplab.data import convert, datasets_info, images, raw_datasets, tfrecord

LAYOUTS = ("folder", "camvid", "voc", "cityscapes", "coco")
_FIRST = 3  # files named per line
# Class names that say "this is not a class" (a class 0 named so is probably the ignore label).
_VOID_NAMES = ("void", "ignore", "ignored", "unlabelled", "unlabeled", "unknown", "none", "other")


@dataclasses.dataclass
class Observation:
    """One example as the doctor saw it.

    Attributes:
      split, name: where it is and its name (the record's ``image/filename`` or the file stem).
      image_file, label_file: the raw files (None for records), for messages.
      where: how to find it again (a record: (shard path, index); raw: the ExampleSpec).
      image_size, label_size: (height, width), None when missing or unreadable.
      image_missing, label_missing: the file (or the record's field) is absent.
      unreadable: messages of files that could not be decoded.
      label_kind: how the label file is stored ("8-bit index", "1-bit", "palette", "RGB",
        "RGBA", "16-bit", ...).
      label_problem: why the label will be refused or misread (None when it is read as class
        indices).
      rgb_colours: for colour labels, the distinct colours (an [K, 3] array).
      histogram: int64 [256] label values as training will see them (None when not known).
      unknown_ids: raw values a dataset's id table does not know (Cityscapes, CamVid).
      image_hash: digest of the decoded pixels (exact duplicates).
    """

    split: str
    name: str
    image_file: str = None
    label_file: str = None
    where: object = None
    image_size: tuple = None
    label_size: tuple = None
    image_missing: bool = False
    label_missing: bool = False
    unreadable: list = dataclasses.field(default_factory=list)
    label_kind: str = None
    label_problem: str = None
    rgb_colours: np.ndarray = None
    histogram: np.ndarray = None
    unknown_ids: tuple = ()
    image_hash: str = None

    def display(self):
        """The file (or record) name used in messages."""
        return self.label_file or self.image_file or self.name


@dataclasses.dataclass
class LabelSpace:
    """The label space the labels are checked against (dataset.json's, or the layout's)."""

    name: str
    num_classes: int
    ignore_label: int
    class_names: tuple
    palette: tuple
    inferred: bool = False  # num_classes guessed from the values (a folder without --num_classes)


# ---------------------------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------------------------


def _pixels_hash(array):
    digest = hashlib.sha1(str(array.shape).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _label_kind(image, data):
    """(kind, values as the file stores them or None for colour images)."""
    depth = data[24] if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 else None
    mode = image.mode
    if depth == 16 or mode.startswith("I") or mode == "F":
        return "16-bit", np.asarray(image).astype(np.int64)
    if mode == "L":
        return "8-bit index", np.asarray(image, np.uint8)
    if mode == "1":
        return "1-bit", np.asarray(image, np.uint8)
    if mode in ("P", "PA"):
        return "palette", np.asarray(image.convert("P") if mode == "PA" else image, np.uint8)
    if mode in ("RGB", "RGBA"):
        return mode, None
    return mode, None


def _rgb_colours(image):
    pixels = np.asarray(image.convert("RGB"), np.uint8).reshape(-1, 3)
    return np.unique(pixels, axis=0)


def _read_image(obs, data, path):
    try:
        array, _ = images.read_rgb(data, path)
    except images.ImageError as error:
        obs.unreadable.append(str(error))
        return
    obs.image_size = tuple(array.shape[:2])
    obs.image_hash = _pixels_hash(array)


def _open_label(obs, data, where):
    """Opens a label file's bytes and records its size, kind and (RGB) colours in ``obs``;
    returns (kind, stored values) or None when it cannot be read (recorded as unreadable)."""
    try:
        image = images.open_image(data, where, "label")
    except images.ImageError as error:
        obs.unreadable.append(str(error))
        return None
    obs.label_size = (image.height, image.width)
    kind, stored = _label_kind(image, data)
    obs.label_kind = kind
    if kind in ("RGB", "RGBA"):
        obs.rgb_colours = _rgb_colours(image)
    return kind, stored


def _observe_png_label(obs, label, space):
    """A raw PngLabel, read with the converter's reader (what the converter would do)."""
    path = label.path
    obs.label_file = path
    if not os.path.exists(path):
        obs.label_missing = True
        return
    try:
        data = images.read_bytes(path, "label")
    except images.ImageError as error:
        obs.unreadable.append(str(error))
        return
    opened = _open_label(obs, data, path)
    if opened is None:
        return
    kind, stored = opened
    try:
        raw = convert.read_png_label(label).astype(np.int64)
    except convert.BadExample as error:
        obs.label_problem = str(error).split(": ", 1)[-1]
        raw = stored  # still counted (palette indices, 16-bit values), not colours
    if raw is None:
        return
    lut = getattr(label, "lut", None)
    if lut is not None:
        lut = np.asarray(lut, np.int64)
        values = np.unique(raw)
        values = values[(values >= 0) & (values < 256)]
        obs.unknown_ids = tuple(int(v) for v in values[lut[values] < 0])
        raw = np.where((raw >= 0) & (raw < 256), lut[np.clip(raw, 0, 255)], raw)
        raw = np.where(raw < 0, space.ignore_label, raw)  # unknown ids: reported, not counted
    obs.histogram = _histogram(raw)


def _histogram(values):
    values = np.asarray(values, np.int64).ravel()
    histogram = np.bincount(np.clip(values, 0, 255), minlength=256).astype(np.int64)
    if values.size and values.max() > 255:  # 16-bit values past 255: kept in the last bin
        histogram[255] -= int((values > 255).sum())
        histogram = np.append(histogram, int((values > 255).sum()))
    return histogram


def _observe_spec(spec, split, space):
    obs = Observation(split, spec.filename, image_file=spec.image_path, where=spec)
    if not os.path.exists(spec.image_path):
        obs.image_missing = True
    else:
        try:
            _read_image(obs, images.read_bytes(spec.image_path), spec.image_path)
        except images.ImageError as error:
            obs.unreadable.append(str(error))
    label = spec.label
    if isinstance(label, convert.PngLabel):
        _observe_png_label(obs, label, space)
    else:
        obs.label_file = getattr(label, "path", None) or getattr(label, "source", None)
        try:
            if isinstance(label, convert.SbdLabel):
                if not os.path.exists(label.path):
                    obs.label_missing = True
                    return obs
                raw = convert.read_sbd_label(label)
                obs.label_kind = "SBD .mat"
            else:
                raw = convert.render_coco_label(label, space.ignore_label)
                obs.label_kind = "COCO polygons"
        except convert.BadExample as error:
            obs.unreadable.append(str(error))
            return obs
        obs.label_size = tuple(raw.shape)
        obs.histogram = _histogram(raw)
    return obs


def layout_examples(layout, input_dir, splits=None, **options):
    """({split: [ExampleSpec]}, LabelSpace or None) of a raw dataset, listed by its converter's
    function (``options``: the folder layout's image_dir, label_dir, list_dir, palette_masks,
    allow_outside_root; voc's sbd_dir; coco's min_area)."""
    if layout == "folder":
        keys = ("image_dir", "label_dir", "list_dir", "palette_masks", "allow_outside_root")
        specs = raw_datasets.folder_examples(
            input_dir, splits, **{k: options[k] for k in keys if options.get(k) is not None}
        )
        return specs, None
    if layout == "camvid":
        return raw_datasets.camvid_examples(input_dir, splits), datasets_info.camvid()
    if layout == "voc":
        specs = raw_datasets.voc_examples(input_dir, splits, sbd_dir=options.get("sbd_dir"))
        return specs, datasets_info.pascal_voc()
    if layout == "cityscapes":
        return raw_datasets.cityscapes_examples(input_dir, splits), datasets_info.cityscapes()
    if layout == "coco":
        min_area = options.get("min_area") or raw_datasets.MIN_REGION_AREA
        return raw_datasets.coco_examples(input_dir, splits, min_area), datasets_info.coco_voc()
    raise ConfigError(f"--layout={layout}: not one of {', '.join(LAYOUTS)}")


def _space_of(spec):
    return LabelSpace(
        spec.name,
        spec.num_classes,
        spec.ignore_label,
        tuple(spec.class_names),
        tuple(tuple(c) for c in spec.palette),
    )


def folder_space(num_classes, class_names=None, ignore_label=255, name="folder"):
    """The label space of a plain folder as ``datasets/build_folder.py`` would record it;
    ``num_classes`` 0: unknown yet (inferred from the values, see :func:`observe_raw`)."""
    names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
    if num_classes and len(names) != num_classes:
        raise ConfigError(
            f"--class_names has {len(names)} names but --num_classes is {num_classes}"
        )
    if not names and not num_classes:
        return None
    num_classes = num_classes or len(names)
    return LabelSpace(name, num_classes, ignore_label, names, datasets_info.color_map(num_classes))


def observe_raw(layout, input_dir, splits=None, *, space=None, limit=0, progress=None, **options):
    """Reads a raw dataset as its converter would: ({split: [Observation]}, LabelSpace, notes).

    Args:
      layout: one of :data:`LAYOUTS`.
      input_dir: the raw dataset's root.
      splits: the splits to read (default: those the converter finds).
      space: the label space (required for nothing: the folder layout infers one from the
        values when not given, and says so).
      limit: read at most this many examples per split (0: all).
      progress: called with (split, done, total) now and then.
      **options: see :func:`layout_examples`.
    """
    split_specs, layout_space = layout_examples(layout, input_dir, splits, **options)
    space = space or (_space_of(layout_space) if layout_space else None)
    probe = space or LabelSpace("folder", 256, 255, (), ())
    observed, notes = {}, []
    for split, specs in split_specs.items():
        chosen = specs[:limit] if limit else specs
        if limit and len(specs) > limit:
            notes.append(
                ("note", f"split {split!r}: read the first {limit} of {len(specs)} examples")
            )
        observed[split] = []
        for index, spec in enumerate(chosen):
            observed[split].append(_observe_spec(spec, split, probe))
            if progress:
                progress(split, index + 1, len(chosen))
    if layout == "folder":
        notes += _unlisted_folder_files(input_dir, split_specs, options)
    if space is None:
        values = np.zeros(1, np.int64)
        for obs in (o for group in observed.values() for o in group):
            if obs.histogram is not None:
                values = np.union1d(values, np.nonzero(obs.histogram[:255])[0])
        num_classes = int(values.max()) + 1
        space = LabelSpace(
            "folder",
            num_classes,
            255,
            tuple(f"class_{i}" for i in range(num_classes)),
            datasets_info.color_map(num_classes),
            inferred=True,
        )
    return observed, space, notes


def _unlisted_folder_files(input_dir, split_specs, options):
    """Lines about files of the folder layout that no list file names: images without a
    label, labels without an image (the converter never sees them)."""
    root = input_dir
    image_dir = os.path.join(root, options.get("image_dir") or "images")
    label_dir = os.path.join(root, options.get("label_dir") or "labels")
    listed = {os.path.realpath(s.image_path) for specs in split_specs.values() for s in specs}
    image_stems, label_stems = {}, {}
    if os.path.isdir(image_dir):
        for name in sorted(os.listdir(image_dir)):
            if images.has_image_extension(name):
                image_stems[os.path.splitext(name)[0]] = os.path.join(image_dir, name)
    if os.path.isdir(label_dir):
        for name in sorted(os.listdir(label_dir)):
            if name.lower().endswith(".png"):
                label_stems[os.path.splitext(name)[0]] = os.path.join(label_dir, name)
    lines = []
    orphans = [p for s, p in label_stems.items() if s not in image_stems]
    if orphans:
        lines.append(
            (
                "warning",
                _named(f"labels without an image: {len(orphans)} file(s) in {label_dir}", orphans),
            )
        )
    unlabelled = [
        p
        for s, p in image_stems.items()
        if s not in label_stems and os.path.realpath(p) not in listed
    ]
    if unlabelled:
        lines.append(
            (
                "warning",
                _named(
                    f"images without a label (not listed in any split): "
                    f"{len(unlabelled)} file(s) in {image_dir}",
                    unlabelled,
                ),
            )
        )
    unlisted = [
        p for s, p in image_stems.items() if s in label_stems and os.path.realpath(p) not in listed
    ]
    if unlisted:
        lines.append(
            ("note", _named(f"{len(unlisted)} labelled image(s) in no split's list file", unlisted))
        )
    return lines


def _feature_bytes(feature, key):
    values = feature[key].bytes_list.value if key in feature else []
    return values[0] if values else b""


def observe_records(dataset_dir, splits=None, *, limit=0, progress=None):
    """Reads a converted dataset's records: ({split: [Observation]}, LabelSpace, notes).

    Labels are looked at both as their PNG stores them (PIL) and as the input pipeline reads
    them (``tf.io.decode_png`` with one channel); a label PNG whose two readings differ, or
    that is not an 8-bit index PNG, is a misread label.
    """
    # TensorFlow: reading TFRecord files (the raw readers need only PIL and numpy)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    info = tfrecord.read_dataset_info(dataset_dir)
    space = LabelSpace(
        info["name"],
        info["num_classes"],
        info["ignore_label"],
        tuple(info["class_names"]),
        tuple(tuple(c) for c in info["palette"]),
    )
    chosen = list(info["splits"]) if splits is None else list(splits)
    unknown = [s for s in chosen if s not in info["splits"]]
    if unknown:
        raise DataError(
            f"{dataset_dir}: split(s) {', '.join(unknown)} not in dataset.json "
            f"(splits: {', '.join(info['splits'])})"
        )
    observed, notes = {}, []
    for split in chosen:
        total = info["splits"][split]
        observed[split] = []
        for path in tfrecord.list_shards(dataset_dir, split):
            for index, serialized in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
                if limit and len(observed[split]) >= limit:
                    break
                feature = tf.train.Example.FromString(serialized).features.feature
                name = _feature_bytes(feature, tfrecord.IMAGE_FILENAME).decode("utf-8", "replace")
                obs = Observation(
                    split, name or f"{os.path.basename(path)}#{index}", where=(path, index)
                )
                _observe_record(obs, feature, tf)
                observed[split].append(obs)
                if progress:
                    progress(split, len(observed[split]), min(total, limit) if limit else total)
        if limit and total > limit:
            notes.append(("note", f"split {split!r}: read the first {limit} of {total} records"))
    return observed, space, notes


def _observe_record(obs, feature, tf):
    image_bytes = _feature_bytes(feature, tfrecord.IMAGE_ENCODED)
    label_bytes = _feature_bytes(feature, tfrecord.LABEL_ENCODED)
    if not image_bytes:
        obs.image_missing = True
    else:
        _read_image(obs, image_bytes, f"record {obs.name} (image)")
    if not label_bytes:
        obs.label_missing = True
        return
    opened = _open_label(obs, label_bytes, f"record {obs.name} (label)")
    if opened is None:
        return
    kind, stored = opened
    try:
        read = tf.io.decode_png(label_bytes, channels=1, dtype=tf.uint8).numpy()[:, :, 0]
    except tf.errors.InvalidArgumentError as error:
        obs.unreadable.append(f"{where}: the pipeline cannot decode it ({error.message})")
        return
    obs.histogram = _histogram(read)
    if kind != "8-bit index" or stored is None or not np.array_equal(stored, read):
        obs.label_problem = {
            "RGB": "an RGB colour PNG: the pipeline reads its luminance, not class ids",
            "RGBA": "an RGBA colour PNG: the pipeline reads its luminance, not class ids",
            "palette": "a palette PNG: the pipeline reads the luminance of its colours, not its "
            "indices",
            "16-bit": "a 16-bit PNG: the pipeline reads the high byte of each value",
            "1-bit": "a 1-bit PNG: the pipeline reads its 1s as 255",
        }.get(kind, f"a {kind} PNG the pipeline does not read as class indices")


# ---------------------------------------------------------------------------------------------
# Diagnosis.
# ---------------------------------------------------------------------------------------------


def _named(text, files, count=None):
    files = list(files)
    shown = ", ".join(str(f) for f in files[:_FIRST])
    more = f", ... ({len(files) - _FIRST} more)" if len(files) > _FIRST else ""
    return f"{text} (first: {shown}{more})" if files else text


@dataclasses.dataclass
class SplitSummary:
    """What :func:`diagnose` found in one split."""

    split: str
    num_images: int
    sizes: list
    counts: class_weights_lib.ClassCounts
    label_kinds: collections.Counter


@dataclasses.dataclass
class Diagnosis:
    """The report: per-split summaries, and (severity, line) findings."""

    space: LabelSpace
    source: str
    splits: dict
    findings: list
    train_split: str = "train"

    @property
    def errors(self):
        return [line for severity, line in self.findings if severity == "error"]

    @property
    def warnings(self):
        return [line for severity, line in self.findings if severity == "warning"]


def diagnose(observed, space, *, source="", notes=(), train_split="train"):
    """Summaries and findings of observed splits (see the module docstring)."""
    findings = list(notes)
    summaries = {}
    n = space.num_classes
    all_values = collections.Counter()
    for split, group in observed.items():
        counts = class_weights_lib.ClassCounts.empty(n)
        kinds = collections.Counter(
            (o.label_kind, o.label_problem is None) for o in group if o.label_kind
        )
        sizes = [o.image_size for o in group if o.image_size]
        for obs in group:
            if obs.histogram is not None and not obs.label_problem:
                counts.add(obs.histogram[:256], space.ignore_label)
                for value in np.nonzero(obs.histogram)[0]:
                    all_values[int(value)] += int(obs.histogram[value])
        summaries[split] = SplitSummary(split, len(group), sizes, counts, kinds)
        findings += _split_findings(split, group, space, counts)
    findings += _duplicates(observed)
    findings += _convention_findings(observed, space, all_values, summaries, train_split)
    order = {"error": 0, "warning": 1, "note": 2}
    findings.sort(key=lambda f: order[f[0]])
    return Diagnosis(space, source, summaries, findings, train_split)


def _split_findings(split, group, space, counts):
    out = []
    where = f"split {split!r}"
    unreadable = [msg for o in group for msg in o.unreadable]
    if unreadable:
        out.append(("error", _named(f"unreadable files: {len(unreadable)} in {where}", unreadable)))
    missing_images = [o.display() for o in group if o.image_missing]
    if missing_images:
        out.append(
            (
                "error",
                _named(
                    f"labels without an image: {len(missing_images)} of "
                    f"{len(group)} examples of {where} have no image file",
                    missing_images,
                ),
            )
        )
    no_label = [o.image_file or o.name for o in group if o.label_missing]
    if no_label and len(no_label) == len(group):
        out.append(
            (
                "error",
                _named(
                    f"{where} has no labels at all ({len(group)} images without a label file)",
                    no_label,
                ),
            )
        )
    elif no_label:
        out.append(
            (
                "error",
                _named(
                    f"missing label files: {len(no_label)} of {len(group)} "
                    f"images of {where} have no label",
                    no_label,
                ),
            )
        )
    by_problem = collections.defaultdict(list)
    for obs in group:
        if obs.label_problem:
            by_problem[(obs.label_kind, obs.label_problem)].append(obs)
    for (kind, problem), members in by_problem.items():
        files = [o.display() for o in members]
        line = f"label files misread: {len(members)} {kind} label(s) in {where}: {problem}"
        out.append(("error", _named(line, files)))
        if kind in ("RGB", "RGBA"):
            out.append(_colour_finding(members, space, where))
    mismatched = [
        o for o in group if o.image_size and o.label_size and o.image_size != o.label_size
    ]
    if mismatched:
        files = [
            f"{o.display()} (HxW: image {_size_text(o.image_size)}, label "
            f"{_size_text(o.label_size)})"
            for o in mismatched
        ]
        out.append(
            (
                "error",
                _named(
                    f"image/label size mismatch: {len(mismatched)} of "
                    f"{len(group)} examples of {where}",
                    files,
                ),
            )
        )
    unknown = [o for o in group if o.unknown_ids]
    if unknown:
        ids = sorted({v for o in unknown for v in o.unknown_ids})
        out.append(
            (
                "error",
                _named(
                    f"label values {ids[:10]} are not ids of this dataset's "
                    f"label table: {len(unknown)} labels of {where}",
                    [o.display() for o in unknown],
                ),
            )
        )
    beyond = [
        o
        for o in group
        if o.histogram is not None and not o.label_problem and _beyond(o.histogram, space)
    ]
    if beyond and not space.inferred:
        values = sorted({v for o in beyond for v in _beyond(o.histogram, space)})
        out.append(
            (
                "error",
                _named(
                    f"label values {values[:10]} outside [0, {space.num_classes}) and not the "
                    f"ignore label {space.ignore_label}: {len(beyond)} of {len(group)} labels "
                    f"of {where}",
                    [o.display() for o in beyond],
                ),
            )
        )
    labelled = counts.pixels.sum()
    if group and labelled:
        absent = [c for c in range(space.num_classes) if counts.pixels[c] == 0]
        if absent:
            out.append(
                (
                    "warning",
                    f"classes missing from {where}: "
                    + ", ".join(f"{c} ({space.class_names[c]})" for c in absent[:10])
                    + (f", ... ({len(absent) - 10} more)" if len(absent) > 10 else ""),
                )
            )
    return out


def _beyond(histogram, space):
    values = np.nonzero(histogram)[0]
    return [int(v) for v in values if v >= space.num_classes and v != space.ignore_label]


def _colour_finding(members, space, where):
    colours = np.unique(np.concatenate([o.rgb_colours for o in members]), axis=0)
    gray = bool(np.all((colours[:, 0] == colours[:, 1]) & (colours[:, 1] == colours[:, 2])))
    known = {tuple(c) for c in space.palette} | set(datasets_info.color_map(256))
    in_palette = sum(tuple(int(v) for v in c) in known for c in colours)
    if gray:
        text = (
            f"the RGB labels of {where} have equal R, G and B ({len(colours)} values "
            f"{sorted(int(c[0]) for c in colours)[:10]}): class ids saved as RGB; save "
            "them as single-channel (mode L) PNGs"
        )
    elif in_palette == len(colours):
        text = (
            f"palette labels saved as RGB: the {len(colours)} colours of the RGB labels of "
            f"{where} are all colours of the dataset's palette / the PASCAL VOC colour map; "
            "they were palette PNGs saved as RGB: write each pixel's palette index (its class "
            "id) into a single-channel PNG"
        )
    else:
        text = (
            f"RGB colour labels in {where}: {len(colours)} distinct colours, "
            f"{in_palette} of them palette colours; map each colour to its class id"
        )
    return ("error", text)


def _duplicates(observed):
    by_hash = collections.defaultdict(list)
    for split, group in observed.items():
        for obs in group:
            if obs.image_hash:
                by_hash[obs.image_hash].append(obs)
    groups = [g for g in by_hash.values() if len(g) > 1]
    if not groups:
        return []
    across = [g for g in groups if len({o.split for o in g}) > 1]
    pairs = [" = ".join(f"{o.split}:{o.image_file or o.name}" for o in g[:3]) for g in groups]
    line = f"exact duplicate images: {len(groups)} group(s), {sum(len(g) for g in groups)} images"
    if across:
        line += f"; {len(across)} group(s) span splits (training images evaluated on)"
    return [("warning", _named(line, pairs))]


def _convention_findings(observed, space, values, summaries, train_split):
    """Heuristics about how the labels were meant (each its own line)."""
    out = []
    if space.inferred or not values:
        return out
    n, ignore = space.num_classes, space.ignore_label
    used = sorted(v for v, c in values.items() if c)
    largest = max(v for v in used if v != ignore) if any(v != ignore for v in used) else -1
    if 0 not in used and largest == n:
        out.append(
            (
                "error",
                f"labels look 1-based: value 0 never occurs and the largest value "
                f"is {n} = num_classes (classes 1..{n} for {n} class names); subtract 1 "
                f"from every label (or add a class 0 to the class list)",
            )
        )
    elif 0 in used and ignore not in used and largest == n:
        out.append(
            (
                "error",
                f"0 looks like the ignore label: values 0..{n} occur for "
                f"num_classes={n}, the ignore label {ignore} never does; if 0 marks "
                f"unlabelled pixels (classes 1..{n}), map 0 -> {ignore} and v -> v - 1 "
                f"(or make 0 a class named e.g. 'background' and num_classes {n + 1})",
            )
        )
    if space.class_names and space.class_names[0].strip().lower() in _VOID_NAMES and used:
        out.append(
            (
                "warning",
                f"class 0 is named {space.class_names[0]!r}: if it marks pixels "
                f"without a class, make it the ignore label ({ignore}) instead of a class "
                "the model learns",
            )
        )
    train = summaries.get(train_split)
    if train is not None and train.counts.pixels.sum():
        others = {s: v for s, v in summaries.items() if s != train_split}
        for c in range(n):
            if train.counts.pixels[c]:
                continue
            elsewhere = [
                f"{s}: {int(v.counts.images[c])} images"
                for s, v in others.items()
                if v.counts.pixels[c]
            ]
            seen = f" (it occurs in {', '.join(elsewhere)})" if elsewhere else ""
            out.append(
                (
                    "warning",
                    f"class {c} ({space.class_names[c]}) is absent from the "
                    f"training split {train_split!r}{seen}: the model cannot learn it",
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------------------------


# How a label file that is accepted is read (the other kinds are errors, each explained there).
_HOW_READ = {
    "8-bit index": "read as class ids",
    "1-bit": "read as class ids 0 and 1",
    "palette": "read as their palette indices, not their colours",
    "SBD .mat": "GTcls.Segmentation read as class ids",
    "COCO polygons": "polygons painted as VOC class ids",
}

_MISREAD = "misread or refused: see the errors"


def _size_text(size):
    return f"{size[0]}x{size[1]}"


def format_report(diagnosis, *, weights=True):
    """The report's text (per-split tables, then the findings, then a last line)."""
    space = diagnosis.space
    lines = [
        f"Dataset {diagnosis.source}: {space.name}, {space.num_classes} classes"
        f"{' (inferred from the label values)' if space.inferred else ''}, ignore label "
        f"{space.ignore_label}"
    ]
    width = max([len(n) for n in space.class_names] + [8])
    for split, summary in diagnosis.splits.items():
        lines.append("")
        lines.append(f"== split {split}: {summary.num_images} images")
        if summary.sizes:
            by_area = sorted(summary.sizes, key=lambda s: (s[0] * s[1], s))
            lines.append(
                f"sizes (HxW): min {_size_text(by_area[0])}, median "
                f"{_size_text(by_area[len(by_area) // 2])}, max "
                f"{_size_text(by_area[-1])}"
                f"{'' if len(set(summary.sizes)) > 1 else ' (all the same)'}"
            )
        if summary.label_kinds:
            kinds = "; ".join(
                f"{c} {kind} ({_HOW_READ.get(kind, 'read as class ids') if ok else _MISREAD})"
                for (kind, ok), c in summary.label_kinds.most_common()
            )
            lines.append(f"label files: {kinds}")
        counts = summary.counts
        total = int(counts.pixels.sum())
        if not total:
            lines.append("no labelled pixel counted")
            continue
        lines.append(f"  {'id':>3}  {'class':<{width}}  {'pixels':>13}  {'%':>6}  {'images':>6}")
        for c in range(space.num_classes):
            share = 100.0 * counts.pixels[c] / total
            lines.append(
                f"  {c:>3}  {space.class_names[c]:<{width}}  {counts.pixels[c]:>13,}  "
                f"{share:>6.2f}  {counts.images[c]:>6}"
            )
        lines.append(
            f"  {'':>3}  {'ignore':<{width}}  {counts.ignored:>13,}  "
            f"{'':>6}  ({space.ignore_label})"
        )
        for value, pixels in sorted(counts.beyond.items())[:10]:
            lines.append(f"  {value:>3}  {'(not a class)':<{width}}  {pixels:>13,}")
        present = [c for c in range(space.num_classes) if counts.pixels[c]]
        most = max(present, key=lambda c: counts.pixels[c])
        least = min(present, key=lambda c: counts.pixels[c])
        lines.append(
            f"imbalance: {space.class_names[most]} / {space.class_names[least]} = "
            f"{counts.pixels[most] / counts.pixels[least]:,.1f}x (most / least "
            "frequent class, by pixels)"
        )
        if weights and split == diagnosis.train_split:
            for rule in class_weights_lib.RULES:
                values, _ = class_weights_lib.compute_weights(rule, counts)
                lines.append(
                    f"--class_weights={rule} would give: " + ",".join(f"{w:.3f}" for w in values)
                )
    lines.append("")
    for severity, text in diagnosis.findings:
        lines.append(f"{severity}: {text}")
    errors, warnings = len(diagnosis.errors), len(diagnosis.warnings)
    verdict = (
        "problems that would spoil training: fix them before training (exit 1)"
        if errors
        else "nothing that would spoil training was found"
    )
    lines.append(f"{errors} error(s), {warnings} warning(s): {verdict}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The contact sheet.
# ---------------------------------------------------------------------------------------------


def choose_cover(observed, space, max_images=12):
    """Observations whose labels together show every class that occurs (greedy set cover:
    each pick adds the most classes not shown yet, ties to the rarer classes); then more
    images, one per split in turn, up to ``max_images`` when few were needed."""
    candidates = [
        o
        for g in observed.values()
        for o in g
        if o.histogram is not None
        and not o.label_problem
        and not o.label_missing
        and not o.image_missing
        and not o.unreadable
    ]
    present = {
        o.name + o.split: {int(c) for c in np.nonzero(o.histogram[: space.num_classes])[0]}
        for o in candidates
    }
    frequency = collections.Counter(c for classes in present.values() for c in classes)
    uncovered = set(frequency)
    chosen = []
    while uncovered and len(chosen) < max_images:
        best = max(
            candidates,
            key=lambda o: (
                len(present[o.name + o.split] & uncovered),
                sum(1.0 / frequency[c] for c in present[o.name + o.split] & uncovered),
            ),
        )
        gained = present[best.name + best.split] & uncovered
        if not gained:
            break
        chosen.append(best)
        uncovered -= gained
    fill = max(0, min(max_images, 6) - len(chosen))
    rest = [o for o in candidates if o not in chosen]
    step = max(1, len(rest) // max(fill, 1))
    chosen += rest[::step][:fill]
    return chosen, sorted(frequency)


def load_pair(obs):
    """The image (uint8 [H, W, 3]) and label (int [H, W], as training reads it) of an
    observation."""
    if isinstance(obs.where, tuple):
        # TensorFlow: reading TFRecord files (as in observe_records)
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        path, index = obs.where
        serialized = next(iter(tf.data.TFRecordDataset(path).skip(index).as_numpy_iterator()))
        feature = tf.train.Example.FromString(serialized).features.feature
        image, _ = images.read_rgb(_feature_bytes(feature, tfrecord.IMAGE_ENCODED), obs.name)
        label_bytes = _feature_bytes(feature, tfrecord.LABEL_ENCODED)
        label = tf.io.decode_png(label_bytes, channels=1, dtype=tf.uint8).numpy()[:, :, 0]
        return image, label.astype(np.int64)
    spec = obs.where
    image, _ = images.read_rgb(spec.image_path)
    label_src = spec.label
    if isinstance(label_src, convert.PngLabel):
        raw = convert.read_png_label(label_src).astype(np.int64)
        if label_src.lut is not None:
            lut = np.asarray(label_src.lut, np.int64)
            raw = np.where(lut[raw] < 0, 255, lut[raw])
    elif isinstance(label_src, convert.SbdLabel):
        raw = convert.read_sbd_label(label_src).astype(np.int64)
    else:
        raw = convert.render_coco_label(label_src, 255).astype(np.int64)
    return image, raw


def _font(size):
    # PIL: drawing the sheet (the only place the doctor draws)
    from PIL import ImageFont  # pylint: disable=import-outside-toplevel

    for name in ("DejaVuSans.ttf", "Arial.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def overlay(image, label, space, alpha=0.55):
    """The image with each class's pixels blended with its palette colour; ignored (and
    out-of-range) pixels are left as they are, under a thin grey hatching."""
    palette = np.zeros((257, 3), np.float32)
    palette[: space.num_classes] = np.asarray(space.palette, np.float32)[: space.num_classes]
    valid = (label >= 0) & (label < space.num_classes)
    colours = palette[np.where(valid, label, 256)]
    out = image.astype(np.float32)
    out[valid] = (1 - alpha) * out[valid] + alpha * colours[valid]
    hatch = (~valid) & (
        (np.add.outer(np.arange(label.shape[0]), np.arange(label.shape[1])) % 6) == 0
    )
    out[hatch] = 128
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def contact_sheet(observed, space, *, max_images=12, tile_width=320, columns=3):
    """The contact sheet (uint8 [H, W, 3]): for each chosen example the image and its overlay
    side by side, captioned with its split, name and classes; a legend of every class's
    colour and name (classes that occur nowhere marked so)."""
    # PIL: drawing the sheet
    from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel

    chosen, occurring = choose_cover(observed, space, max_images)
    if not chosen:
        raise DataError("no readable labelled example to draw")
    font, small = _font(14), _font(12)
    caption = 34
    tiles = []
    for obs in chosen:
        image, label = load_pair(obs)
        height = max(1, round(image.shape[0] * tile_width / image.shape[1]))
        left = Image.fromarray(image).resize((tile_width, height), Image.BILINEAR)
        right = Image.fromarray(overlay(image, label, space)).resize(
            (tile_width, height), Image.NEAREST
        )
        tile = Image.new("RGB", (2 * tile_width + 4, height + caption), (255, 255, 255))
        tile.paste(left, (0, caption))
        tile.paste(right, (tile_width + 4, caption))
        draw = ImageDraw.Draw(tile)
        draw.text((4, 2), f"{obs.split}: {obs.name}", fill=(0, 0, 0), font=font)
        classes = [space.class_names[c] for c in np.nonzero(obs.histogram[: space.num_classes])[0]]
        draw.text((4, 18), ", ".join(classes)[:100], fill=(60, 60, 60), font=small)
        tiles.append(tile)
    columns = min(columns, len(tiles))
    cell_w = max(t.width for t in tiles) + 10
    cell_h = max(t.height for t in tiles) + 10
    rows = -(-len(tiles) // columns)
    legend_columns = max(1, (columns * cell_w) // 200)
    legend_rows = -(-space.num_classes // legend_columns)
    legend_h = 30 + 22 * legend_rows
    sheet = Image.new(
        "RGB", (columns * cell_w + 10, rows * cell_h + legend_h + 10), (255, 255, 255)
    )
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (10 + (i % columns) * cell_w, 10 + (i // columns) * cell_h))
    draw = ImageDraw.Draw(sheet)
    top = 10 + rows * cell_h
    draw.text(
        (10, top),
        f"{space.name}: {space.num_classes} classes (image | labels; "
        f"hatched: ignore label {space.ignore_label})",
        fill=(0, 0, 0),
        font=font,
    )
    for c in range(space.num_classes):
        x = 10 + (c % legend_columns) * 200
        y = top + 26 + (c // legend_columns) * 22
        draw.rectangle(
            [x, y, x + 16, y + 16], fill=tuple(int(v) for v in space.palette[c]), outline=(0, 0, 0)
        )
        name = f"{c} {space.class_names[c]}" + ("" if c in occurring else " (nowhere)")
        draw.text((x + 22, y), name[:24], fill=(0, 0, 0), font=small)
    return np.asarray(sheet, np.uint8)


def write_png(path, array):
    """Writes an RGB array as a PNG file (atomically)."""
    # PIL: encoding the sheet
    from PIL import Image  # pylint: disable=import-outside-toplevel

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_io.write_bytes(path, buffer.getvalue())


__all__ = [
    "LAYOUTS",
    "Observation",
    "LabelSpace",
    "layout_examples",
    "folder_space",
    "observe_raw",
    "observe_records",
    "diagnose",
    "Diagnosis",
    "format_report",
    "choose_cover",
    "load_pair",
    "overlay",
    "contact_sheet",
    "write_png",
]
