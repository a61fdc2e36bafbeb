r"""The dataset doctor: ``python -m deeplab.inspect_dataset``, before training.

    python -m deeplab.inspect_dataset --dataset_dir=data/camvid --sheet=camvid.png
    python -m deeplab.inspect_dataset --input_dir=../shared/data/camvid --layout=camvid
    python -m deeplab.inspect_dataset --input_dir=~/data/mine --layout=folder \
        --num_classes=3 --class_names=bg,cat,dog

``--dataset_dir`` reads converted records (+ dataset.json); ``--input_dir`` with ``--layout``
reads a raw dataset with the converters' own readers (``datasets/build_*.py``), before
conversion. Per split: images, sizes, pixels and images per class, imbalance, missing classes;
then one line per finding. Errors (values outside the classes, labels that will be misread or
refused, size mismatches, missing labels) exit 1; warnings exit 0. Nothing in the dataset is
written. ``--sheet`` writes a contact sheet of image/label overlays showing every class that
occurs; with ``--logdir`` it is also a TensorBoard image (``dataset/contact_sheet``). The
checks are listed in ``deeplab/data/doctor.py``.
"""

# TensorFlow is imported (quietly, _console.quiet_tensorflow) only to read records or write the
# TensorBoard image: a raw dataset is checked with PIL and numpy alone, in a fraction of the time.
import os
import sys
import time

from absl import flags

from deeplab import _console
from deeplab.common.errors import ConfigError
from deeplab.data import doctor

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset_dir", None, "A converted dataset (TFRecord shards + dataset.json).")
flags.DEFINE_string("input_dir", None, "A raw dataset before conversion (with --layout).")
flags.DEFINE_enum(
    "layout",
    None,
    list(doctor.LAYOUTS),
    "How --input_dir is laid out: the converter whose reader is used (datasets/build_<layout>.py).",
)
flags.DEFINE_list("splits", [], "Splits to read (default: all).")
flags.DEFINE_string(
    "train_split",
    "train",
    "The split training will use (class weights, classes absent from training).",
)
flags.DEFINE_integer(
    "num_classes",
    0,
    "--layout=folder: classes (0: inferred from the values, which cannot tell values out of range)",
)
flags.DEFINE_list("class_names", [], "--layout=folder: class names (as build_folder.py takes).")
flags.DEFINE_integer("ignore_label", 255, "--layout=folder: the ignore label.")
flags.DEFINE_string("image_dir", "images", "--layout=folder: image folder under --input_dir.")
flags.DEFINE_string("label_dir", "labels", "--layout=folder: label folder under --input_dir.")
flags.DEFINE_string("list_dir", None, "--layout=folder: folder of the {split}.txt files.")
flags.DEFINE_boolean(
    "palette_masks",
    False,
    "--layout=folder: palette PNG masks are read as their indices (build_folder.py's flag).",
)
flags.DEFINE_string("sbd_dir", None, "--layout=voc: SBD benchmark_RELEASE (split trainaug).")
flags.DEFINE_integer("limit", 0, "Read at most this many examples per split (0: all).")
flags.DEFINE_string("sheet", None, "Write a contact sheet PNG of image/label overlays here.")
flags.DEFINE_integer("sheet_images", 12, "Most images on the sheet.", lower_bound=1)
flags.DEFINE_string("logdir", None, "Also write the sheet as a TensorBoard image here.")


def _progress():
    state = {"last": 0.0}

    def report(split, done, total):
        now = time.time()
        if sys.stderr.isatty() and (now - state["last"] > 0.5 or done == total):
            state["last"] = now
            print(
                f"\r{split}: {done}/{total}",
                end="\n" if done == total else "",
                file=sys.stderr,
                flush=True,
            )

    return report


def _observe():
    splits = FLAGS.splits or None
    if bool(FLAGS.dataset_dir) == bool(FLAGS.input_dir):
        raise ConfigError(
            "give either --dataset_dir (converted records) or --input_dir with "
            "--layout (a raw dataset)"
        )
    if FLAGS.dataset_dir:
        _console.quiet_tensorflow()
        observed, space, notes = doctor.observe_records(
            FLAGS.dataset_dir, splits, limit=FLAGS.limit, progress=_progress()
        )
        return observed, space, notes, FLAGS.dataset_dir
    if not FLAGS.layout:
        raise ConfigError(f"--input_dir needs --layout ({', '.join(doctor.LAYOUTS)})")
    space = None
    if FLAGS.layout == "folder":
        name = os.path.basename(os.path.normpath(FLAGS.input_dir))
        space = doctor.folder_space(FLAGS.num_classes, FLAGS.class_names, FLAGS.ignore_label, name)
    observed, space, notes = doctor.observe_raw(
        FLAGS.layout,
        FLAGS.input_dir,
        splits,
        space=space,
        limit=FLAGS.limit,
        progress=_progress(),
        image_dir=FLAGS.image_dir,
        label_dir=FLAGS.label_dir,
        list_dir=FLAGS.list_dir,
        palette_masks=FLAGS.palette_masks,
        sbd_dir=FLAGS.sbd_dir,
    )
    return observed, space, notes, f"{FLAGS.input_dir} (raw, {FLAGS.layout} layout)"


def _write_sheet(observed, space):
    sheet = doctor.contact_sheet(observed, space, max_images=FLAGS.sheet_images)
    if FLAGS.sheet:
        doctor.write_png(FLAGS.sheet, sheet)
        print(f"contact sheet: {FLAGS.sheet} ({sheet.shape[1]}x{sheet.shape[0]})")
    if FLAGS.logdir:
        _console.quiet_tensorflow()
        # TensorFlow: only the TensorBoard copy of the sheet needs it (imported quietly above)
        import tensorflow as tf

        # TensorFlow at module level (core summaries): imported with it
        from deeplab.logdir import summaries

        writer = tf.summary.create_file_writer(FLAGS.logdir)
        with writer.as_default():
            summaries.image("dataset/contact_sheet", sheet[None], step=0, max_outputs=1)
        writer.flush()
        print(f"contact sheet as a TensorBoard image in {FLAGS.logdir} (dataset/contact_sheet)")


def main(args):
    del args
    observed, space, notes, source = _observe()
    diagnosis = doctor.diagnose(
        observed, space, source=source, notes=notes, train_split=FLAGS.train_split
    )
    print(doctor.format_report(diagnosis), flush=True)
    if FLAGS.sheet or FLAGS.logdir:
        _write_sheet(observed, space)
    return 1 if diagnosis.errors else 0


if __name__ == "__main__":
    _console.run(main, tensorflow=False)  # TensorFlow only for records (_observe)
