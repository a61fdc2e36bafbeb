"""Issue 8: the CamVid run's SavedModel, through deeplab.predict on a raw val image, predicts what
deeplab.evaluate scores for that image.

Needs the trained run (runs/camvid, from experiments/camvid.flags), the converted data
(data/camvid) and the raw CamVid folder (../shared/data/camvid, or $DEEPLAB_CAMVID_DIR); skipped
when any is absent (a fresh clone, CI). Takes a few minutes on 2 CPU cores (ResNet-50 at 480x360).

The three binaries run as a user runs them, in subprocesses:
  export_saved_model --checkpoint=runs/camvid                -> SavedModel
  predict --model=<SavedModel> --input=<first val.txt image> -> index PNG
  evaluate --flagfile=experiments/camvid.flags --eval_limit=1 -> confusion_matrix.npy
The confusion matrix of predict's PNG against the raw label (class 11 -> ignore) must equal
evaluate's, count for count (the val shard keeps val.txt's order, so --eval_limit=1 is that image).
"""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import harness

REPO = Path(__file__).resolve().parent.parent
CAMVID_DIR = Path(os.environ.get("DEEPLAB_CAMVID_DIR", REPO.parent / "shared" / "data" / "camvid"))
RUN = REPO / "runs" / "camvid"
DATA = REPO / "data" / "camvid"

pytestmark = pytest.mark.skipif(
    not (
        (CAMVID_DIR / "val.txt").is_file()
        and (DATA / "dataset.json").is_file()
        and (RUN / "checkpoint").is_file()
    ),
    reason="needs ../shared/data/camvid, data/camvid and a trained runs/camvid (issue 8)",
)


def _run(module, *args):
    result = harness.run(module, *args, timeout=1200)
    assert result.returncode == 0, (module, args, result.stdout[-2000:], result.stderr[-3000:])


def test_saved_model_through_predict_matches_evaluate(tmp_path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    checkpoint = tf.train.latest_checkpoint(str(RUN))
    first = (CAMVID_DIR / "val.txt").read_text().split()[:2]
    image_path = CAMVID_DIR / "val" / os.path.basename(first[0])
    label_path = CAMVID_DIR / "valannot" / os.path.basename(first[1])

    export_dir = tmp_path / "export"
    _run("deeplab.export_saved_model", f"--checkpoint={checkpoint}", f"--export_dir={export_dir}")
    _run(
        "deeplab.predict",
        f"--model={export_dir}",
        f"--input={image_path}",
        f"--output_dir={tmp_path / 'pred'}",
    )
    _run(
        "deeplab.evaluate",
        "--flagfile=experiments/camvid.flags",
        f"--checkpoint={checkpoint}",
        "--eval_limit=1",
        f"--results_dir={tmp_path / 'eval'}",
    )

    prediction = np.asarray(Image.open(tmp_path / "pred" / (image_path.stem + ".png"))).astype(
        np.int64
    )
    raw_label = np.asarray(Image.open(label_path)).astype(np.int64)
    assert prediction.shape == raw_label.shape == (360, 480)
    valid = raw_label != 11  # Unlabelled -> ignore label
    ours = np.zeros((11, 11), np.int64)
    np.add.at(ours, (raw_label[valid], prediction[valid]), 1)
    evaluated = np.load(tmp_path / "eval" / "confusion_matrix.npy")
    assert evaluated.sum() == valid.sum()
    np.testing.assert_array_equal(ours, evaluated)
