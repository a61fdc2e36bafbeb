"""A dataset of photos labelled by a trained model itself (for quantization-aware fine-tuning
without the model's own training labels).

    python experiments/pseudo_labels.py --checkpoint=weights/mnv2_pascal \
        --images=../shared/data/camvid/train --size=513,513 --output=data/camvid_pascal_pseudo

Every photo of ``--images`` is resized bilinearly to ``--size`` (the geometry the model will be
exported and checked at), segmented by the float model of ``--checkpoint`` (single scale,
whole image) and written as a TFRecord dataset with that class map as its label: a ``train``
split of all photos and a ``val`` split of the first ``--num_val``. The classes, names and palette
are the checkpoint's (dataset_info.json). Issue 33 uses it to fine-tune the authors' imported
PASCAL model with quantization in the loop on CamVid frames, where no PASCAL label exists.
"""

# isort: split
import deeplab  # noqa: F401  # before TensorFlow (CONVENTIONS.md)

# isort: split
import argparse
import glob
import io
import os

import numpy as np
from PIL import Image

from deeplab.data import records
from deeplab.data import tfrecord
from deeplab.logdir import checkpoints
from deeplab.model.preprocessing import normalize_image


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", required=True, help="folder of .png / .jpg photos")
    parser.add_argument("--size", default="513,513", help="H,W every photo is resized to")
    parser.add_argument("--num_val", type=int, default=16)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    files = sorted(
        glob.glob(os.path.join(args.images, "*.png"))
        + glob.glob(os.path.join(args.images, "*.jpg"))
    )
    if not files:
        raise SystemExit(f"--images={args.images}: no .png or .jpg photo there")
    info = checkpoints.read_run_info(args.checkpoint)
    dataset_info = info.get("dataset_info") or {}
    model = checkpoints.load_model(args.checkpoint, fuse_batch_norm=True)
    num_classes = int(model.num_classes)
    present = {}
    counts = {}
    for split, chosen in (("train", files), ("val", files[: args.num_val])):
        with records.ShardedWriter(args.output, split, len(chosen)) as writer:
            for index, path in enumerate(chosen):
                photo = Image.open(path).convert("RGB").resize(size[::-1], Image.BILINEAR)
                pixels = np.asarray(photo)
                logits = model(normalize_image(pixels[None].astype("float32")), training=False)
                label = np.argmax(np.asarray(logits)[0], -1).astype(np.uint8)
                classes = np.unique(label)
                present.setdefault(split, set()).update(int(c) for c in classes)
                buffer = io.BytesIO()
                photo.save(buffer, format="PNG")
                writer.write(
                    index,
                    records.encode_example(
                        image_bytes=buffer.getvalue(),
                        image_format="png",
                        height=size[0],
                        width=size[1],
                        label_png=tfrecord.encode_label_png(label),
                        filename=os.path.splitext(os.path.basename(path))[0],
                        classes_present=classes,
                    ),
                )
        counts[split] = writer.count
    tfrecord.write_dataset_info(
        args.output,
        name=f"pseudo_labels_{os.path.basename(os.path.normpath(args.images))}",
        num_classes=num_classes,
        ignore_label=255,
        class_names=dataset_info.get("class_names") or [str(c) for c in range(num_classes)],
        palette=dataset_info.get("palette") or [[c, c, c] for c in range(num_classes)],
        splits=counts,
        label_classes=present,
        merge=False,
        source=f"experiments/pseudo_labels.py --checkpoint={args.checkpoint} --size={args.size}",
    )
    print(f"{args.output}: {counts} photos at {size[0]}x{size[1]} labelled by {args.checkpoint}")


if __name__ == "__main__":
    main()
