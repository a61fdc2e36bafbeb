"""Bad input: each case stops the converter with the file and the reason (nothing half-written), or
with skip_bad is skipped, reported and counted. Deliberate conversions (grayscale, opaque RGBA) are
noted."""

import io
import logging
import os
import signal
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import harness
import raw_fixtures as fx
from deeplab.common.errors import DataError
from deeplab.data import convert
from deeplab.data import raw_datasets
from deeplab.data import records
from deeplab.data import tfrecord
from deeplab.data.datasets_info import DatasetSpec
from deeplab.data.datasets_info import cityscapes
from deeplab.data.datasets_info import coco_voc
from deeplab.data.datasets_info import color_map

SPEC = DatasetSpec("toy", 3, 255, ("a", "b", "c"), color_map(3))


def _convert(root, out, skip_bad=False, palette_masks=False, splits=("train",)):
    specs = raw_datasets.folder_examples(root, list(splits), palette_masks=palette_masks)
    return convert.convert_splits(
        specs,
        out,
        dataset=SPEC,
        num_workers=0,
        skip_bad=skip_bad,
        progress=False,
        palette_hint="; pass --palette_masks if its palette indices are the class ids",
    )


def _break(root, case):
    """Damages example img1 of a make_folder() tree; returns (bad file, expected reason regex)."""
    image, label = root / "images" / "img1.png", root / "labels" / "img1.png"
    if case == "missing image":
        image.unlink()
        return root / "images" / "img1.jpg", "image file not found"
    if case == "missing label":
        label.unlink()
        return label, "label file not found"
    if case == "corrupt image":
        image.write_bytes(b"this is not a PNG at all")
        return image, "not an image file PIL can read"
    if case == "truncated image":
        buf = io.BytesIO()
        Image.fromarray(fx.rgb(40, 40, 0)).save(buf, format="PNG")
        image.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        return image, "corrupt or truncated"
    if case == "size mismatch":
        fx.save(label, np.zeros((5, 8), np.uint8))
        return label, r"label is 8x5 but image .*img1.png is 8x6"
    if case == "label out of range":
        fx.save(label, np.full((6, 8), 7, np.uint8))
        return label, r"label values \[7\] are outside \[0, 3\) and not the ignore label 255"
    if case == "floating-point image":
        Image.fromarray(np.full((6, 8), 0.5, np.float32)).save(root / "images" / "img1.tif")
        image.unlink()
        return root / "images" / "img1.tif", "floating-point image .mode F."
    if case == "16-bit label":
        Image.fromarray(np.full((6, 8), 1, np.uint16)).save(label)
        return label, "16-bit label image"
    if case == "label for the stored pixels of a turned photo":
        exif = Image.Exif()
        exif[0x0112] = 6  # stored sideways: shown 6 wide and 8 high
        Image.fromarray(fx.rgb(6, 8, 1)).save(image, exif=exif.tobytes())
        return label, (
            r"label is 8x6 but image .*img1.png is 6x8 as displayed \(its EXIF "
            r"orientation is applied"
        )
    if case == "palette mask":
        fx.voc_palette_png(label, np.ones((6, 8), np.uint8))
        return label, "palette .colour-mapped. PNG.*pass --palette_masks"
    if case == "RGB colour mask":
        fx.save(label, fx.rgb(6, 8, 2))
        return label, "label is an RGB colour image"
    if case == "decompression bomb":
        # A file that decodes to more than twice PIL's pixel limit (the test lowers the limit).
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(image)
        return image, "too large to decode safely"
    if case == "JPEG label named .png":
        Image.fromarray((np.arange(48).reshape(6, 8) % 3).astype(np.uint8)).save(
            label, format="JPEG"
        )
        return label, "label is a JPEG file whatever its name; lossy compression"
    raise ValueError(case)


CASES = [
    "missing image",
    "missing label",
    "corrupt image",
    "truncated image",
    "size mismatch",
    "label out of range",
    "floating-point image",
    "16-bit label",
    "label for the stored pixels of a turned photo",
    "palette mask",
    "RGB colour mask",
    "JPEG label named .png",
    "decompression bomb",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_example_stops_with_file_and_reason_and_writes_nothing(tmp_path, case, monkeypatch):
    if case == "decompression bomb":  # PIL raises above 2x MAX_IMAGE_PIXELS (workers: inline here)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30)  # error above 60: 10x10, not 6x8
    root = fx.make_folder(tmp_path / "raw")
    bad_file, reason = _break(root, case)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=reason) as err:
        _convert(root, out)
    assert str(bad_file) in str(err.value)
    assert (
        fx.shard_names(out) == [] and os.listdir(out) == []
    )  # no shard, no temporary file, no dataset.json


@pytest.mark.parametrize("case", ["corrupt image", "label out of range", "palette mask"])
def test_skip_bad_skips_reports_and_counts(tmp_path, case, library_log):
    root = fx.make_folder(tmp_path / "raw")
    bad_file, reason = _break(root, case)
    reports = _convert(root, tmp_path / "out", skip_bad=True)
    assert reports["train"].count == 2 and len(reports["train"].skipped) == 1
    assert str(bad_file) in reports["train"].skipped[0]
    assert f"skipped: {reports['train'].skipped[0]}" in library_log(logging.WARNING)
    assert tfrecord.read_dataset_info(tmp_path / "out")["splits"] == {"train": 2}
    names = [
        records.decode_example(r)["filename"].numpy()
        for r in tf.data.TFRecordDataset(tfrecord.list_shards(tmp_path / "out", "train"))
    ]
    assert names == [b"img0", b"img2"]


def test_palette_masks_flag_reads_palette_indices(tmp_path):
    root = fx.make_folder(tmp_path / "raw")
    fx.voc_palette_png(root / "labels" / "img1.png", np.full((6, 8), 2, np.uint8))
    _convert(root, tmp_path / "out", palette_masks=True)
    serialized = list(tf.data.TFRecordDataset(tfrecord.list_shards(tmp_path / "out", "train")))
    assert (
        records.decode_example(serialized[1])["label"].numpy() == 2
    ).all()  # the index, not a colour


def _decoded(out, index):
    serialized = list(tf.data.TFRecordDataset(tfrecord.list_shards(out, "train")))
    return records.decode_example(serialized[index])


def test_grayscale_and_opaque_rgba_images_are_converted_with_a_note(tmp_path, library_log):
    root = fx.make_folder(tmp_path / "raw")
    gray = fx.rgb(6, 8, 5)[:, :, 0]
    fx.save(root / "images" / "img1.png", gray)
    opaque = np.concatenate([fx.rgb(6, 8, 6), np.full((6, 8, 1), 255, np.uint8)], -1)
    fx.save(root / "images" / "img2.png", opaque)
    reports = _convert(root, tmp_path / "out")
    assert reports["train"].count == 3 and len(reports["train"].notes) == 2
    assert reports["train"].notes[0].endswith("img1.png: grayscale image converted to RGB")
    assert (
        reports["train"].notes[1].endswith("img2.png: RGBA image converted to RGB (alpha dropped)")
    )
    assert library_log(logging.WARNING) == reports["train"].notes
    np.testing.assert_array_equal(
        _decoded(tmp_path / "out", 1)["image"].numpy(), np.repeat(gray[:, :, None], 3, -1)
    )
    np.testing.assert_array_equal(_decoded(tmp_path / "out", 2)["image"].numpy(), opaque[:, :, :3])


def test_empty_split_and_all_bad_split(tmp_path):
    root = fx.make_folder(tmp_path / "raw", n=1)
    (root / "test.txt").write_text("\n")
    with pytest.raises(DataError, match=r"test\.txt: empty list"):
        raw_datasets.folder_examples(root, ["test"])
    with pytest.raises(DataError, match=r"nope\.txt: list file of split 'nope' not found"):
        raw_datasets.folder_examples(root, ["nope"])
    (root / "images" / "img0.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="all 1 examples were bad"):
        _convert(root, tmp_path / "out", skip_bad=True)
    assert fx.shard_names(tmp_path / "out") == []


def test_cityscapes_unknown_label_id_and_sbd_bad_mat(tmp_path):
    root = fx.make_cityscapes(tmp_path / "city")
    bad = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000019_gtFine_labelIds.png"
    fx.save(bad, np.full((3, 4), 40, np.uint8))
    specs = raw_datasets.cityscapes_examples(root, ["val"])
    with pytest.raises(
        DataError,
        match=r"frankfurt_000000_000019_gtFine_labelIds\.png: label values \[40\] are not ids",
    ):
        convert.convert_splits(
            specs,
            tmp_path / "out",
            dataset=cityscapes(),
            num_workers=0,
            progress=False,
        )
    voc, sbd, _, _ = fx.make_voc(tmp_path / "voc")
    mat = sbd / "dataset" / "cls" / "2008_000100.mat"
    import scipy.io

    scipy.io.savemat(mat, {"something_else": np.zeros((2, 2))})
    specs = raw_datasets.voc_examples(tmp_path / "voc", ["trainaug"], sbd_dir=sbd)
    from deeplab.data.datasets_info import pascal_voc

    with pytest.raises(DataError, match=r"2008_000100\.mat: no GTcls\.Segmentation"):
        convert.convert_splits(
            specs,
            tmp_path / "out2",
            dataset=pascal_voc(),
            num_workers=0,
            progress=False,
        )


def test_coco_image_size_disagreeing_with_annotation(tmp_path):
    root, _ = fx.make_coco(tmp_path / "raw")
    fx.save(root / "train2017" / "000000000002.jpg", fx.rgb(10, 10, 0))
    specs = raw_datasets.coco_examples(root)
    with pytest.raises(
        DataError,
        match=r"000000000002\.jpg: image is 10x10 but .*instances_train2017\.json says 80x60",
    ):
        convert.convert_splits(
            specs,
            tmp_path / "out",
            dataset=coco_voc(),
            num_workers=0,
            progress=False,
        )


# ----------------------------------------------------------------------------- interrupted re-runs


def _filenames(out, split):
    return [
        records.decode_example(r)["filename"].numpy().decode()
        for r in tf.data.TFRecordDataset(tfrecord.list_shards(out, split))
    ]


@pytest.mark.parametrize("fail_after_renames", [0, 1, 2, 3])
def test_a_conversion_killed_during_the_switch_leaves_old_or_new_never_a_mixture(
    tmp_path, monkeypatch, fail_after_renames
):
    """Dataset A (4 shards), then dataset B over it, interrupted after k shard renames (and, for
    k=3, before its dataset.json is written): the folder reads as all-A; finished, all-B."""
    a = fx.make_folder(tmp_path / "a", n=8)
    b = fx.make_folder(tmp_path / "b", n=6, size=(5, 7))
    for i in range(6):
        os.replace(b / "images" / f"img{i}.png", b / "images" / f"b{i}.png")
        os.replace(b / "labels" / f"img{i}.png", b / "labels" / f"b{i}.png")
    (b / "train.txt").write_text("".join(f"b{i}\n" for i in range(6)))
    out = tmp_path / "out"

    def convert_b():
        specs = raw_datasets.folder_examples(b, ["train"], palette_masks=False)
        return convert.convert_splits(
            specs,
            out,
            dataset=SPEC,
            num_workers=0,
            num_shards=3,
            progress=False,
        )

    specs = raw_datasets.folder_examples(a, ["train"], palette_masks=False)
    convert.convert_splits(specs, out, dataset=SPEC, num_workers=0, num_shards=4, progress=False)
    a_names = _filenames(out, "train")
    assert len(a_names) == 8

    real_replace, calls = os.replace, [0]

    def dying_replace(src, dst):
        if str(src).endswith(".tfrecord"):
            if calls[0] == fail_after_renames:
                raise KeyboardInterrupt("killed")
            calls[0] += 1
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    if fail_after_renames < 3:
        with pytest.raises(KeyboardInterrupt):
            convert_b()
    else:  # every shard renamed: die when dataset.json is switched over
        monkeypatch.setattr(
            tfrecord,
            "write_dataset_info",
            lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt("killed")),
        )
        with pytest.raises(KeyboardInterrupt):
            convert_b()
    monkeypatch.undo()
    # Still dataset A, whole, in its order; what B left behind is not read.
    assert _filenames(out, "train") == a_names
    assert tfrecord.read_dataset_info(out)["splits"] == {"train": 8}
    # The re-run completes the switch and removes A's shards and B's leftovers.
    convert_b()
    assert sorted(_filenames(out, "train")) == sorted(f"b{i}" for i in range(6))
    assert len(fx.shard_names(out)) == 3


def test_a_split_dataset_json_does_not_list_is_refused(tmp_path):
    """Dataset B converted over A with only its train split: A's val shards stay on disk but are
    no longer part of the dataset, and reading them is an error that says so."""
    root = fx.make_folder(tmp_path / "raw", n=4)
    out = tmp_path / "out"
    _convert(root, out, splits=("train", "val"))
    other = DatasetSpec("other", 3, 255, ("a", "b", "c"), color_map(3))
    specs = raw_datasets.folder_examples(root, ["train"], palette_masks=False)
    convert.convert_splits(specs, out, dataset=other, num_workers=0, progress=False)
    assert tfrecord.read_dataset_info(out)["splits"] == {"train": 4}
    with pytest.raises(
        DataError, match=r"split 'val' is not listed in dataset.json \(listed: train\)"
    ):
        tfrecord.list_shards(out, "val")


# ----------------------------------------------------------------------------- list files


@pytest.mark.parametrize(
    "entry",
    [
        "../outside/secret.png ../outside/secret_label.png",
        "{outside}/secret.png {outside}/secret_label.png",
        "images/../../outside/secret.png labels/img0.png",
    ],
)
def test_list_entries_outside_the_root_are_refused(tmp_path, entry):
    root = fx.make_folder(tmp_path / "raw")
    outside = tmp_path / "outside"
    fx.save(outside / "secret.png", fx.rgb(6, 8, 9))
    fx.save(outside / "secret_label.png", np.zeros((6, 8), np.uint8))
    (root / "train.txt").write_text(entry.format(outside=outside) + "\n")
    with pytest.raises(
        DataError,
        match=r"train.txt: .*secret.png.* resolves to .*outside.*, outside the dataset "
        r"root .*raw; pass --allow_outside_root",
    ):
        raw_datasets.folder_examples(root, ["train"])
    # Allowed explicitly: read where it points.
    specs = raw_datasets.folder_examples(root, ["train"], allow_outside_root=True)
    assert os.path.realpath(specs["train"][0].image_path) == os.path.realpath(
        outside / "secret.png"
    )


def test_name_entries_and_camvid_paths_outside_the_root_are_refused(tmp_path):
    root = fx.make_folder(tmp_path / "raw")
    (root / "train.txt").write_text("img0\n../../etc/passwd\n")
    with pytest.raises(
        DataError, match=r"train.txt: '../../etc/passwd' resolves to .*outside the dataset root"
    ):
        raw_datasets.folder_examples(root, ["train"])
    camvid = fx.make_camvid(tmp_path / "camvid")
    fx.save(tmp_path / "elsewhere.png", fx.rgb(3, 4, 1))
    (camvid / "train.txt").write_text(
        f"{tmp_path / 'elsewhere.png'} /SegNet/CamVid/trainannot/0001TP_006690.png\n"
    )
    with pytest.raises(DataError, match=r"train.txt: .*elsewhere.png.* outside the dataset root"):
        raw_datasets.camvid_examples(camvid, ["train"])
    # The SegNet lists' absolute paths of another machine still resolve under the root.
    camvid = fx.make_camvid(tmp_path / "camvid2")
    assert len(raw_datasets.camvid_examples(camvid, ["train"])["train"]) == 2


def test_an_image_listed_twice_is_an_error(tmp_path):
    root = fx.make_folder(tmp_path / "raw")
    (root / "train.txt").write_text("img0\nimg1\nimg0\n")
    with pytest.raises(DataError, match=r"train.txt: entry 3 repeats entry 1 \(.*img0.png\)"):
        raw_datasets.folder_examples(root, ["train"])
    camvid = fx.make_camvid(tmp_path / "camvid")
    lines = (camvid / "val.txt").read_text().splitlines()
    (camvid / "val.txt").write_text("\n".join(lines + lines[:1]) + "\n")
    with pytest.raises(DataError, match=r"val.txt: entry 3 repeats entry 1"):
        raw_datasets.camvid_examples(camvid, ["val"])


# ----------------------------------------------------------------------------- killed converters


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.slow
def test_workers_die_with_a_killed_converter(tmp_path, sig):
    """A converter killed while its workers read (one is blocked on a FIFO that never delivers)
    leaves no worker process, and no shard or dataset.json."""
    psutil = pytest.importorskip("psutil")
    root = fx.make_folder(tmp_path / "raw", n=3)
    os.remove(root / "images" / "img1.png")
    os.mkfifo(root / "images" / "img1.png")
    (root / "train.txt").write_text(
        "".join(f"images/img{i}.png labels/img{i}.png\n" for i in range(3))
    )
    out = tmp_path / "out"
    converter = harness.start(
        "datasets/build_folder.py",
        "--input_dir",
        root,
        "--output_dir",
        out,
        "--num_classes",
        "3",
        "--num_workers",
        "2",
        "--no_progress",
    )
    parent = psutil.Process(converter.pid)
    # The event: a worker process has the FIFO open (it is blocked reading it).
    deadline = time.time() + 120
    fifo = str(root / "images" / "img1.png")
    writer = None
    # The event: a worker has opened the FIFO for reading (a non-blocking open for writing
    # succeeds only then); holding the write end open keeps that worker blocked in read().
    while writer is None and time.time() < deadline and converter.poll() is None:
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.05)
    if writer is None:
        converter.kill()
        pytest.fail("no worker opened the FIFO: " + converter.communicate()[0][-2000:])
    workers = parent.children(recursive=True)
    assert workers
    converter.send_signal(sig)
    converter.wait(timeout=60)
    gone, alive = psutil.wait_procs(workers, timeout=60)
    os.close(writer)
    assert not alive, f"workers left behind: {alive}"
    assert len(gone) == len(workers)
    assert not os.path.exists(out / "dataset.json") and fx.shard_names(out) == []
