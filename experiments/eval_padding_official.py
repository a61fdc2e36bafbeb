"""Issue 34: the authors' padded evaluation against ours, on the imported authors' model.

    python experiments/eval_padding_official.py \\
        --tflite=../shared/data/deeplab_tflite/deeplabv3_mnv2_pascal_quant.tflite \\
        --images=../shared/data/camvid/val --num_images=20

The authors evaluate a photo by padding it at the bottom and right to their eval crop (513x513 on
VOC) with 127.5 and segmenting the whole canvas (image pooling then averages the padding too).
Each CamVid photo (360x480, kept at its size) is segmented three ways: by the authors' int8
interpreter on the padded 513x513 canvas (the reference), and by our float Keras model imported
from that file, (a) padded the same way (``InferenceOptions(pad_to=(513, 513))``, i.e.
``--eval_pad_to=513``) and (b) at the photo's own size, unpadded (our default). Printed: the
share of the photo's pixels whose class equals the reference's, averaged over the photos.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.official_agreement import _classes  # noqa: E402  pylint: disable=wrong-import-position
from experiments.official_agreement import _interpreter  # noqa: E402  pylint: disable=wrong-import-position


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--tflite", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--num_images", type=int, default=20)
    args = parser.parse_args()

    # pylint: disable=import-outside-toplevel
    import glob

    from PIL import Image

    from deeplab.common.inference_options import InferenceOptions
    from deeplab.evaluation import inference
    from deeplab.export import official as official_import
    from deeplab.model import preprocessing

    files = sorted(glob.glob(os.path.join(args.images, "*.png")))
    files = files[:: max(1, len(files) // args.num_images)][: args.num_images]
    official = _interpreter(args.tflite)
    model, _ = official_import.import_tflite(args.tflite)
    pad = preprocessing.pad_pixel(model.backbone)
    shares = {"padded to 513 (--eval_pad_to=513)": [], "unpadded (default)": []}
    for name in files:
        photo = np.asarray(Image.open(name).convert("RGB"))
        height, width = photo.shape[:2]
        canvas = np.empty((513, 513, 3), np.float32)
        canvas[:] = np.asarray(pad, np.float32)
        canvas[:height, :width] = photo
        reference = _classes(official, np.round(canvas).astype(np.uint8))[:height, :width]
        images = preprocessing.normalize_image(photo[None].astype(np.float32))
        padded = inference.predict_probabilities(
            model, images, options=InferenceOptions(pad_to=(513, 513))
        )
        whole = inference.predict_probabilities(model, images)
        for key, probabilities in zip(shares, (padded, whole)):
            classes = np.argmax(np.asarray(probabilities)[0], -1)
            shares[key].append(float(np.mean(classes == reference)))
    print(f"{len(files)} photos of {args.images} at their own size, 360x480 in a 513x513 canvas")
    for key, values in shares.items():
        print(f"  ours {key}: {100 * np.mean(values):.2f}% of pixels as the authors' interpreter")


if __name__ == "__main__":
    main()
