"""Imports the authors' released DeepLab v3 MobileNetV2 models as Keras models of this project.

    python -m deeplab.import_official \\
        --tflite=../shared/data/deeplab_tflite/deeplabv3_mnv2_pascal_quant.tflite \\
        --output=weights/mnv2_pascal
    python -m deeplab.import_official --tf1_checkpoint=.../model.ckpt-30000 --output=weights/x

The output folder is laid out like a training logdir (``ckpt-0``, ``model_config.json``,
``dataset_info.json``), so ``--checkpoint`` (predict, evaluate, visualize, export) and
``--init_checkpoint`` (fine-tuning) take it like any run of ours; it also holds
``model.weights.h5`` (``model.load_weights`` of the same DeepLabV3) and ``import_report.json``
(the source, what was read and the conventions found in the graph). How the files are read and
mapped: :mod:`deeplab.export.official` (and CONVENTIONS.md, "The authors' released models").
"""

import json
import os

from absl import flags

from deeplab import _console
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags; defined only when it runs, so that importing this module in a process
    that holds another binary's --tflite / --output (export_saved_model, figures) clashes with
    nothing."""
    flags.DEFINE_string("tflite", None, "An authors' DeepLab v3 MobileNetV2 .tflite file.")
    flags.DEFINE_string(
        "tf1_checkpoint", None, "An authors' TF1 (slim) DeepLab v3 MobileNetV2 checkpoint prefix."
    )
    flags.DEFINE_string("output", None, "Folder to write (a logdir of ours: ckpt-0, configs).")
    flags.DEFINE_string(
        "labels",
        None,
        "Text file with one class name per line (default: PASCAL VOC's names for 21 classes).",
    )
    flags.DEFINE_integer(
        "import_output_stride",
        16,
        "Output stride of a model imported from a TF1 checkpoint (TFLite files record theirs).",
    )
    flags.DEFINE_bool(
        "overwrite",
        False,
        "Replace a non-empty --output folder that holds an earlier import (never a training "
        "run's logdir, nor a folder without import_report.json).",
    )


def main(args):
    del args
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.export import official  # after the flags: fast --help

    if bool(FLAGS.tflite) == bool(FLAGS.tf1_checkpoint):
        raise ConfigError("pass exactly one of --tflite and --tf1_checkpoint")
    if not FLAGS.output:
        raise ConfigError("--output is required (the folder to write)")
    official.check_output(FLAGS.output, FLAGS.overwrite)  # before the work, not after
    names = None
    if FLAGS.labels:
        try:
            with open(FLAGS.labels, encoding="utf-8") as handle:
                names = [line.strip() for line in handle if line.strip()]
        except OSError as error:
            raise UserError(f"--labels={FLAGS.labels}: {error.strerror}") from error
    source = FLAGS.tflite or FLAGS.tf1_checkpoint
    print(f"reading {source}")
    with _console.library_output_to_log(os.path.join(FLAGS.output, "import.log")):
        if FLAGS.tflite:
            model, report = official.import_tflite(FLAGS.tflite, names)
        else:
            model, report = official.import_tf1_checkpoint(
                FLAGS.tf1_checkpoint,
                output_stride=FLAGS.import_output_stride,
                class_names=names,
            )
        print(f"writing {FLAGS.output} (checkpoint, weights, model card)")
        output = official.write_imported(model, report, FLAGS.output, overwrite=FLAGS.overwrite)
    print(
        f"imported {report['source']} -> {output}: {report['backbone']}, output stride "
        f"{report['output_stride']}, {report['num_classes']} classes"
    )
    print(json.dumps({k: v for k, v in report.items() if k != "class_names"}))


if __name__ == "__main__":
    define_flags()
    _console.run(main)
