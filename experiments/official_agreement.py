"""Agreement of our imported Keras model (and our own TFLite exports of it) with the authors' file.

    python experiments/official_agreement.py \\
        --tflite=../shared/data/deeplab_tflite/deeplabv3_mnv2_pascal_quant.tflite \\
        --images=../shared/data/camvid/val --num_images=20

Every stage segments the same real photographs, each resized to the file's 513x513 input:

- keras:        the model ``deeplab.export.official`` builds from the file, float32;
- ours_float:   that model exported by ``deeplab.export.tflite.convert_float`` (float TFLite);
- ours_int8:    exported by ``deeplab.export.tflite.convert_int8``, calibrated on --num_calibration
                other images of the same folder (full-integer TFLite);
- keras_os8:    the Keras model at output stride 8 (not a reproduction check: how far the
                OS switch moves the authors' model);
- ours_qat_int8 (with --qat_tflite): an int8 export of that model after quantization-aware
                fine-tuning (experiments/official_qat.flags), whose ranges come from training.

and prints, for each, the share of pixels whose class equals the official int8 interpreter's,
averaged over the images, plus the classes the official model finds. No figure is fixed here.
"""

import argparse
import glob
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deeplab.export import official as official_import  # noqa: E402  pylint: disable=wrong-import-position
from deeplab.export import tflite
from deeplab.model import preprocessing


def _interpreter(path_or_bytes):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    kwargs = {
        "experimental_op_resolver_type": (
            tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    }
    if isinstance(path_or_bytes, bytes):
        interpreter = tf.lite.Interpreter(model_content=path_or_bytes, **kwargs)
    else:
        interpreter = tf.lite.Interpreter(model_path=path_or_bytes, **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def _classes(interpreter, image):
    """Class map of a TFLite DeepLab (official: int64 [1,H,W]; ours: int32 semantic output)."""
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], image[None].astype(detail["dtype"]))
    interpreter.invoke()
    for output in interpreter.get_output_details():
        if len(output["shape"]) == 3:
            return interpreter.get_tensor(output["index"])[0]
    raise ValueError("no class-map output")


def load_images(folder, size, count, offset=0):
    files = sorted(
        glob.glob(os.path.join(folder, "*.png")) + glob.glob(os.path.join(folder, "*.jpg"))
    )
    step = max(1, len(files) // max(1, count))
    chosen = files[offset::step][:count]
    return chosen, [
        np.asarray(Image.open(f).convert("RGB").resize(size[::-1], Image.BILINEAR)) for f in chosen
    ]


def agreement(
    tflite_path,
    images,
    calibration,
    stages=("keras", "ours_float", "ours_int8", "keras_os8"),
    qat_tflite=None,
):
    """{stage: mean share of pixels equal to the official interpreter's classes}."""
    from deeplab.model import deeplabv3 as model_lib  # pylint: disable=import-outside-toplevel

    official = _interpreter(tflite_path)
    model, report = official_import.import_tflite(tflite_path)
    size = tuple(report["input"]["shape"][1:3])
    runners = {}
    if "keras" in stages:
        runners["keras"] = lambda image: np.argmax(
            np.asarray(
                model(preprocessing.normalize_image(image[None].astype("float32")), training=False)
            )[0],
            -1,
        )
    if "keras_os8" in stages:
        os8 = model_lib.rebuild_with_output_stride(model, 8)
        runners["keras_os8"] = lambda image: np.argmax(
            np.asarray(
                os8(preprocessing.normalize_image(image[None].astype("float32")), training=False)
            )[0],
            -1,
        )
    if "ours_float" in stages:
        interpreter = _interpreter(tflite.convert_float(model, size))
        runners["ours_float"] = lambda image, i=interpreter: _classes(i, image)
    if "ours_int8" in stages:
        interpreter = _interpreter(tflite.convert_int8(model, size, calibration))
        runners["ours_int8"] = lambda image, i=interpreter: _classes(i, image)
    if qat_tflite:
        interpreter = _interpreter(qat_tflite)
        runners["ours_qat_int8"] = lambda image, i=interpreter: _classes(i, image)
    shares = {name: [] for name in runners}
    # What our own int8 export changes against our float model (issue 22): the same pixels.
    versus_keras = {name: [] for name in runners if name != "keras"} if "keras" in runners else {}
    found = set()
    for image in images:
        reference = _classes(official, image)
        found.update(np.unique(reference).tolist())
        outputs = {name: run(image) for name, run in runners.items()}
        for name, classes in outputs.items():
            shares[name].append(float(np.mean(classes == reference)))
            if name in versus_keras:
                versus_keras[name].append(float(np.mean(classes == outputs["keras"])))
    names = report["class_names"]
    agreement.versus_keras = {name: float(np.mean(v)) for name, v in versus_keras.items()}
    return {name: float(np.mean(v)) for name, v in shares.items()}, [
        names[c] for c in sorted(found)
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tflite", required=True)
    parser.add_argument("--images", required=True, help="folder of real photographs")
    parser.add_argument("--num_images", type=int, default=20)
    parser.add_argument("--num_calibration", type=int, default=16)
    parser.add_argument(
        "--qat_tflite", default="", help="also an int8 export after quantization-aware training"
    )
    args = parser.parse_args()
    _, images = load_images(args.images, (513, 513), args.num_images)
    _, calibration = load_images(args.images, (513, 513), args.num_calibration, offset=1)
    shares, classes = agreement(args.tflite, images, calibration, qat_tflite=args.qat_tflite)
    print(
        f"{len(images)} images of {args.images}, 513x513; classes the official model finds: "
        f"{', '.join(classes)}"
    )
    for name, share in shares.items():
        # Three decimals: the int8 files differ from one another by hundredths of a percent.
        print(f"{name:<13} agrees with the official int8 file on {100 * share:.3f}% of pixels")
    for name, share in getattr(agreement, "versus_keras", {}).items():
        print(f"{name:<13} agrees with our float32 Keras model on {100 * share:.3f}% of pixels")


if __name__ == "__main__":
    main()
