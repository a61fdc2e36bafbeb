"""The dataset doctor (deeplab/data/doctor.py, python -m deeplab.inspect_dataset): six broken
datasets, each caught by its own line, on a raw folder before conversion and on records that
hold the same files (as another tool could have written them); a clean one passes; the contact
sheet shows every class. Images are 12x16 pixels."""

import io
import os

import numpy as np
import pytest
from PIL import Image

import harness
from deeplab.data import datasets_info
from deeplab.data import doctor
from deeplab.data import records
from deeplab.data import tfrecord

NAMES = ("bg", "cat", "dog")
H, W = 12, 16


def _label(seed, classes=(0, 1, 2)):
    """A 12x16 label: three vertical bands of ``classes`` (one band per class, in order)."""
    out = np.zeros((H, W), np.uint8)
    for i, c in enumerate(classes):
        out[:, i * W // len(classes) : (i + 1) * W // len(classes)] = c
    out[0, 0] = classes[seed % len(classes)]
    return out


def _png(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def clean_examples():
    """{split: [(name, image array, label PNG bytes or None)]}: 3 train, 2 val."""
    return {
        "train": [(f"t{i}", _image(i), _png(_label(i))) for i in range(3)],
        "val": [(f"v{i}", _image(10 + i), _png(_label(i))) for i in range(2)],
    }


def broken(case):
    """The examples of one broken dataset."""
    examples = clean_examples()
    if case == "palette_as_rgb":  # palette masks opened and saved again as RGB
        colours = np.asarray(datasets_info.color_map(3), np.uint8)
        for split, group in examples.items():
            examples[split] = [
                (n, im, _png(colours[_label(i)])) for i, (n, im, _) in enumerate(group)
            ]
    elif case == "zero_is_ignore":  # 0 = unlabelled, classes 1..3 for 3 class names
        for split, group in examples.items():
            examples[split] = [
                (n, im, _png(_label(i, (0, 1, 2, 3)))) for i, (n, im, _) in enumerate(group)
            ]
    elif case == "one_based":  # classes 1..3 for 3 class names
        for split, group in examples.items():
            examples[split] = [
                (n, im, _png(_label(i, (1, 2, 3)))) for i, (n, im, _) in enumerate(group)
            ]
    elif case == "size_mismatch":
        name, image, _ = examples["train"][1]
        examples["train"][1] = (name, image, _png(_label(1)[: H // 2, : W // 2]))
    elif case == "missing_label":
        name, image, _ = examples["train"][2]
        examples["train"][2] = (name, image, None)
    elif case == "class_absent_from_train":  # dog only in val
        examples["train"] = [
            (n, im, _png(_label(i, (0, 1)))) for i, (n, im, _) in enumerate(examples["train"])
        ]
    elif case != "clean":
        raise ValueError(case)
    return examples


# The line each case must print (a substring of one finding), and whether it is an error.
EXPECTED = {
    "palette_as_rgb": ("palette labels saved as RGB", True),
    "zero_is_ignore": ("0 looks like the ignore label", True),
    "one_based": ("labels look 1-based", True),
    "size_mismatch": ("image/label size mismatch: 1 of 3 examples of split 'train'", True),
    "missing_label": ("missing label files: 1 of 3 images of split 'train' have no label", True),
    "class_absent_from_train": ("class 2 (dog) is absent from the training split 'train'", False),
}


def write_folder(root, examples):
    """The raw folder layout of datasets/build_folder.py."""
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "labels"))
    for split, group in examples.items():
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            for name, image, label in group:
                Image.fromarray(image).save(os.path.join(root, "images", f"{name}.png"))
                if label is not None:
                    with open(os.path.join(root, "labels", f"{name}.png"), "wb") as handle:
                        handle.write(label)
                f.write(name + "\n")
    return str(root)


def write_records(root, examples):
    """Records holding the same files as they are (no converter check), with dataset.json."""
    for split, group in examples.items():
        with records.ShardedWriter(root, split, len(group), 1) as writer:
            for index, (name, image, label) in enumerate(group):
                writer.write(
                    index,
                    records.encode_example(
                        image_bytes=_png(image),
                        image_format="png",
                        height=H,
                        width=W,
                        label_png=label or b"",
                        filename=name,
                    ),
                )
    spec = datasets_info.DatasetSpec("toy", 3, 255, NAMES, datasets_info.color_map(3))
    tfrecord.write_dataset_info(
        root, **spec.as_dict(), splits={s: len(g) for s, g in examples.items()}
    )
    return str(root)


def _raw_diagnosis(root):
    space = doctor.folder_space(3, NAMES, 255, "toy")
    observed, space, notes = doctor.observe_raw("folder", root, space=space)
    return doctor.diagnose(observed, space, source=root, notes=notes), observed, space


def _record_diagnosis(root):
    observed, space, notes = doctor.observe_records(root)
    return doctor.diagnose(observed, space, source=root, notes=notes), observed, space


def _check(diagnosis, case):
    text, is_error = EXPECTED[case]
    lines = diagnosis.errors if is_error else diagnosis.warnings
    hits = [line for line in lines if text in line]
    report = doctor.format_report(diagnosis)
    assert hits, report  # one line (per split where it shows)
    if not is_error:
        assert not diagnosis.errors, report
    return hits[0]


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_each_broken_raw_folder_is_caught_by_its_own_line(case, tmp_path):
    root = write_folder(tmp_path / case, broken(case))
    diagnosis, _, _ = _raw_diagnosis(root)
    line = _check(diagnosis, case)
    if case in ("size_mismatch", "missing_label"):
        assert "t1" in line or "t2" in line  # names the file


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_each_broken_record_set_is_caught_by_its_own_line(case, tmp_path):
    root = write_records(str(tmp_path / case), broken(case))
    diagnosis, _, _ = _record_diagnosis(root)
    _check(diagnosis, case)


def test_a_clean_dataset_has_no_finding_and_counts_every_pixel(tmp_path):
    raw, _, _ = _raw_diagnosis(write_folder(tmp_path / "raw", broken("clean")))
    converted, _, _ = _record_diagnosis(write_records(str(tmp_path / "rec"), broken("clean")))
    for diagnosis in (raw, converted):
        assert diagnosis.findings == [], doctor.format_report(diagnosis)
        train = diagnosis.splits["train"].counts
        assert train.pixels.sum() == 3 * H * W and train.images.tolist() == [3, 3, 3]


def test_duplicates_and_how_labels_are_read_are_reported(tmp_path):
    examples = broken("clean")
    name, _, label = examples["val"][1]
    examples["val"][1] = (name, examples["train"][0][1], label)  # a train image again in val
    diagnosis, _, _ = _raw_diagnosis(write_folder(tmp_path / "dup", examples))
    (line,) = diagnosis.warnings
    assert line.startswith("exact duplicate images: 1 group(s), 2 images; 1 group(s) span splits")
    assert "label files: 3 8-bit index (read as class ids)" in doctor.format_report(diagnosis)


def test_raw_folder_readings_follow_the_converter(tmp_path):
    """A palette PNG is refused without --palette_masks (as build_folder.py refuses it) and
    read as its indices with it; a label file nobody lists is named."""
    examples = broken("clean")
    root = write_folder(tmp_path / "p", examples)
    palette_png = Image.fromarray(_label(0), mode="L").convert("P")
    palette_png.save(os.path.join(root, "labels", "t0.png"))
    Image.fromarray(_label(0)).save(os.path.join(root, "labels", "orphan.png"))
    diagnosis, _, _ = _raw_diagnosis(root)
    assert any(
        "label files misread: 1 palette label(s) in split 'train'" in line
        for line in diagnosis.errors
    ), doctor.format_report(diagnosis)
    assert any(
        "labels without an image" in line and "orphan.png" in line for line in diagnosis.warnings
    )
    space = doctor.folder_space(3, NAMES, 255, "toy")
    observed, space, _ = doctor.observe_raw("folder", root, space=space, palette_masks=True)
    assert not doctor.diagnose(observed, space).errors


def test_the_sheet_covers_every_class(tmp_path):
    examples = broken("clean")
    # class 2 only in the last val image: the cover must pick it
    examples["train"] = [
        (n, im, _png(_label(i, (0, 1)))) for i, (n, im, _) in enumerate(examples["train"])
    ]
    examples["val"][0] = (examples["val"][0][0], examples["val"][0][1], _png(_label(0, (0, 1))))
    root = write_records(str(tmp_path / "rec"), examples)
    observed, space, _ = doctor.observe_records(root)
    chosen, occurring = doctor.choose_cover(observed, space, max_images=2)
    shown = set()
    for obs in chosen:
        shown |= {int(c) for c in np.nonzero(obs.histogram[:3])[0]}
    assert occurring == [0, 1, 2] and shown == {0, 1, 2}
    sheet = doctor.contact_sheet(observed, space, max_images=2)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3


@pytest.mark.slow
def test_binary_exit_status_sheet_and_read_only(tmp_path):
    """One broken raw folder (exit 1, its line) and the clean records (exit 0) with a sheet
    and a TensorBoard copy; the dataset folders are left byte for byte as they were."""
    raw = write_folder(tmp_path / "raw", broken("one_based"))
    rec = write_records(str(tmp_path / "rec"), broken("clean"))
    before = {
        p: open(os.path.join(d, p), "rb").read()
        for d in (raw, rec)
        for p in os.listdir(d)
        if os.path.isfile(os.path.join(d, p))
    }
    bad = harness.run(
        "deeplab.inspect_dataset",
        f"--input_dir={raw}",
        "--layout=folder",
        "--num_classes=3",
        "--class_names=bg,cat,dog",
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "error: labels look 1-based" in bad.stdout
    sheet = tmp_path / "sheet.png"
    good = harness.run(
        "deeplab.inspect_dataset",
        f"--dataset_dir={rec}",
        f"--sheet={sheet}",
        f"--logdir={tmp_path / 'tb'}",
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "0 error(s), 0 warning(s)" in good.stdout
    assert Image.open(sheet).mode == "RGB"
    assert any(name.startswith("events.out") for name in os.listdir(tmp_path / "tb"))
    after = {
        p: open(os.path.join(d, p), "rb").read()
        for d in (raw, rec)
        for p in os.listdir(d)
        if os.path.isfile(os.path.join(d, p))
    }
    assert before == after
