"""Converters on tiny fixture trees in each raw layout: counts, label values, split membership."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import harness
import raw_fixtures as fx
from deeplab.common import log
from deeplab.data import datasets_info
from deeplab.data import raw_datasets
from deeplab.data import records
from deeplab.data import tfrecord

CAMVID_DIR = fx.REPO.parent / "shared" / "data" / "camvid"


def read_split(directory, split):
    out = []
    for record in tf.data.TFRecordDataset(tfrecord.list_shards(directory, split)):
        ex = records.decode_example(record)
        out.append(
            {
                "image": ex["image"].numpy(),
                "label": ex["label"].numpy(),
                "filename": ex["filename"].numpy().decode(),
                "present": ex["classes_present"].numpy().tolist(),
            }
        )
    return out


def run(script, *args):
    """A converter script's main, the library's lines printed as the script prints them
    (``deeplab._console.run_script``)."""
    with log.console_output():
        return fx.load_script(script).main([*map(str, args), "--num_workers", "0", "--no_progress"])


def test_voc_and_sbd_trainaug(tmp_path, capsys):
    voc, sbd, voc_labels, sbd_labels = fx.make_voc(tmp_path / "raw")
    out = tmp_path / "out"
    run("build_voc2012", "--input_dir", tmp_path / "raw", "--sbd_dir", sbd, "--output_dir", out)
    printed = capsys.readouterr().out
    for line in (
        "train: 3 examples",
        "val: 2 examples",
        "trainval: 5 examples",
        "trainaug: 6 examples",
    ):
        assert line in printed
    info = tfrecord.read_dataset_info(out)
    assert info["splits"] == {"train": 3, "val": 2, "trainval": 5, "trainaug": 6}
    assert (
        info["num_classes"] == 21
        and info["class_names"][15] == "person"
        and info["palette"][1] == [128, 0, 0]
    )
    # VOC labels: palette indices read as they are, 255 boundary kept
    for ex in read_split(out, "val"):
        np.testing.assert_array_equal(ex["label"], voc_labels[ex["filename"]])
        assert 255 in ex["label"] and 255 not in ex["present"]
    # trainaug = SBD train + SBD val + VOC train - VOC val
    trainaug = {ex["filename"]: ex for ex in read_split(out, "trainaug")}
    assert sorted(trainaug) == sorted(
        set(fx.SBD_TRAIN + fx.SBD_VAL + fx.VOC_TRAIN) - set(fx.VOC_VAL)
    )
    np.testing.assert_array_equal(
        trainaug["2008_000100"]["label"], sbd_labels["2008_000100"]
    )  # from the .mat
    np.testing.assert_array_equal(
        trainaug["2007_000001"]["label"], voc_labels["2007_000001"]
    )  # VOC's own label wins
    assert trainaug["2008_000102"]["image"].shape == (12, 16, 3)  # image found in SBD's img/
    # the JPEG bytes are stored unchanged
    record = next(iter(tf.data.TFRecordDataset(tfrecord.list_shards(out, "train"))))
    stored = (
        tf.train.Example.FromString(record.numpy())
        .features.feature["image/encoded"]
        .bytes_list.value[0]
    )
    assert stored == (voc / "JPEGImages" / "2007_000001.jpg").read_bytes()


def test_voc_splits_flag_and_trainaug_needs_sbd(tmp_path):
    fx.make_voc(tmp_path / "raw")
    run(
        "build_voc2012",
        "--input_dir",
        tmp_path / "raw" / "VOCdevkit",
        "--output_dir",
        tmp_path / "out",
        "--splits",
        "val",
    )
    assert fx.shard_names(tmp_path / "out") == ["val-00000-of-00001.tfrecord"]
    from deeplab.common.errors import ConfigError
    from deeplab.common.errors import DataError

    with pytest.raises(ConfigError, match="trainaug needs --sbd_dir"):
        raw_datasets.voc_examples(tmp_path / "raw", ["trainaug"])
    with pytest.raises(DataError, match="split.s. test not found; available: train, val, trainval"):
        raw_datasets.voc_examples(tmp_path / "raw", ["test"])
    with pytest.raises(DataError, match="not a PASCAL VOC 2012 folder"):
        raw_datasets.voc_examples(tmp_path)


def test_cityscapes_label_ids_to_train_ids(tmp_path, capsys):
    root = fx.make_cityscapes(tmp_path / "raw")
    run("build_cityscapes", "--input_dir", root, "--output_dir", tmp_path / "out")
    printed = capsys.readouterr().out
    assert (
        "train: 4 examples" in printed
        and "val: 2 examples" in printed
        and "train_extra: 2 examples" in printed
    )
    expected = np.array([[255, 255, 0, 0], [11, 13, 18, 8], [1, 1, 10, 10]])
    examples = read_split(tmp_path / "out", "train")
    assert [e["filename"] for e in examples] == [
        "aachen_000000_000019",
        "aachen_000001_000020",
        "bochum_000000_000019",
        "bochum_000001_000020",
    ]
    for ex in examples + read_split(tmp_path / "out", "train_extra"):
        np.testing.assert_array_equal(ex["label"], expected)
    assert tfrecord.read_dataset_info(tmp_path / "out")["num_classes"] == 19
    assert tfrecord.read_dataset_info(tmp_path / "out")["label_classes"]["train"] == [
        0,
        1,
        8,
        10,
        11,
        13,
        18,
    ]
    # combined splits only on request: trainval_coarse = train + val + train_extra (Table 13)
    run(
        "build_cityscapes",
        "--input_dir",
        root,
        "--output_dir",
        tmp_path / "out",
        "--splits",
        "trainval_coarse",
    )
    names = [e["filename"] for e in read_split(tmp_path / "out", "trainval_coarse")]
    assert (
        len(names) == 8
        and names[:4] == [e["filename"] for e in examples]
        and names[-1] == "augsburg_000001_000020"
    )
    assert tfrecord.read_dataset_info(tmp_path / "out")["splits"] == {
        "train": 4,
        "val": 2,
        "train_extra": 2,
        "trainval_coarse": 8,
    }


def test_cityscapes_table_is_the_19_class_mapping():
    lut = datasets_info.cityscapes_label_id_to_train_id()
    assert [
        int(lut[i])
        for i in (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
    ] == list(range(19))
    assert all(lut[i] == 255 for i in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30))
    assert lut[34] == -1 and lut[255] == 255
    spec = datasets_info.cityscapes()
    assert (
        spec.class_names[0] == "road"
        and spec.class_names[18] == "bicycle"
        and spec.palette[13] == (0, 0, 142)
    )


def test_coco_to_voc_selection_and_rendering(tmp_path, capsys):
    root, car = fx.make_coco(tmp_path / "raw")
    run("build_coco_voc", "--input_dir", root, "--output_dir", tmp_path / "out")
    assert "train2017: 2 examples" in capsys.readouterr().out
    examples = {e["filename"]: e for e in read_split(tmp_path / "out", "train2017")}
    assert sorted(examples) == [
        "000000000001",
        "000000000002",
    ]  # 3: only small regions; 4: only non-VOC
    first = examples["000000000001"]["label"]
    assert (first[10:40, 10:40] == 15).all()  # person polygon interior
    assert (first[12:28, 52:73] == 0).all()  # truck (not VOC): background
    assert (first[48:58, 5:30] == 255).all()  # crowd: ignore
    assert set(np.unique(first)) == {0, 15, 255}
    np.testing.assert_array_equal(
        examples["000000000002"]["label"], car * 7
    )  # compressed RLE, car = 7
    assert examples["000000000002"]["present"] == [0, 7]
    info = tfrecord.read_dataset_info(tmp_path / "out")
    assert info["name"] == "coco_voc" and "area > 1000" in info["selection"]


def test_coco_category_map():
    mapping = datasets_info.coco_to_voc()
    assert (
        len(mapping) == 20
        and mapping[1] == 15
        and mapping[5] == 1
        and mapping[63] == 18
        and mapping[72] == 20
    )
    assert 8 not in mapping  # truck


def test_camvid_segnet_lists_with_foreign_absolute_paths(tmp_path, capsys):
    root = fx.make_camvid(tmp_path / "raw")
    run("build_camvid", "--input_dir", root, "--output_dir", tmp_path / "out")
    assert "train: 2 examples" in capsys.readouterr().out
    expected = fx.CAMVID_LABEL.astype(int)
    expected[expected == 11] = 255
    for ex in read_split(tmp_path / "out", "val"):
        np.testing.assert_array_equal(ex["label"], expected)
    info = tfrecord.read_dataset_info(tmp_path / "out")
    assert info["num_classes"] == 11 and info["class_names"][10] == "Bicyclist"


def test_resolve_listed_path(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.png").write_bytes(b"")
    assert raw_datasets.resolve_listed_path(tmp_path, "/SegNet/CamVid/train/a.png") == str(
        tmp_path / "train" / "a.png"
    )
    assert raw_datasets.resolve_listed_path(tmp_path, "train/a.png") == str(
        tmp_path / "train" / "a.png"
    )
    assert raw_datasets.resolve_listed_path(tmp_path, "/x/y/val/b.png") == str(
        tmp_path / "val" / "b.png"
    )


def test_folder_names_and_pairs(tmp_path, capsys):
    root = fx.make_folder(tmp_path / "raw")
    run(
        "build_folder",
        "--input_dir",
        root,
        "--output_dir",
        tmp_path / "out",
        "--num_classes",
        "3",
        "--class_names",
        "a,b,c",
        "--num_shards",
        "2",
    )
    printed = capsys.readouterr().out
    assert "train: 3 examples" in printed and "val: 1 examples" in printed
    assert fx.shard_names(tmp_path / "out") == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
        "val-00000-of-00002.tfrecord",
        "val-00001-of-00002.tfrecord",
    ]
    train = read_split(tmp_path / "out", "train")
    assert [e["filename"] for e in train] == ["img0", "img1", "img2"]
    np.testing.assert_array_equal(train[1]["image"], fx.rgb(6, 8, 1))  # PNG stored losslessly
    np.testing.assert_array_equal(train[1]["label"], np.arange(48).reshape(6, 8) % 3)
    info = tfrecord.read_dataset_info(tmp_path / "out")
    assert (
        info["name"] == "raw"
        and info["class_names"] == ["a", "b", "c"]
        and info["splits"] == {"train": 3, "val": 1}
    )
    # The class ids the labels hold, per split, for the class-count check of every run.
    assert info["label_classes"]["train"] == [0, 1, 2]


def test_parallel_workers_write_the_same_bytes(tmp_path):
    root = fx.make_folder(tmp_path / "raw", n=20)
    module = fx.load_script("build_folder")
    for workers in (0, 2):
        module.main(
            [
                "--input_dir",
                str(root),
                "--output_dir",
                str(tmp_path / f"w{workers}"),
                "--num_classes",
                "3",
                "--num_workers",
                str(workers),
                "--no_progress",
                "--splits",
                "train",
            ]
        )
    shards = [tfrecord.list_shards(tmp_path / f"w{workers}", "train") for workers in (0, 2)]
    assert len(shards[0]) == len(shards[1]) >= 1
    for a, b in zip(*shards):
        assert open(a, "rb").read() == open(b, "rb").read()


def test_make_synthetic_cli_and_voc_like_preset(tmp_path, capsys):
    module = fx.load_script("make_synthetic")
    module.main(
        [
            "--output_dir",
            str(tmp_path / "syn"),
            "--num_train",
            "3",
            "--num_val",
            "2",
            "--height",
            "20",
            "--width",
            "24",
        ]
    )
    assert "train: 3 examples" in capsys.readouterr().out
    module.main(
        [
            "--output_dir",
            str(tmp_path / "voc"),
            "--preset",
            "voc_like",
            "--num_train",
            "1",
            "--num_val",
            "1",
        ]
    )
    record = next(iter(tf.data.TFRecordDataset(tfrecord.list_shards(tmp_path / "voc", "train"))))
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    assert feature["image/format"].bytes_list.value[0] == b"jpeg"
    assert Image.open(io.BytesIO(feature["image/encoded"].bytes_list.value[0])).size == (500, 375)
    assert tfrecord.read_dataset_info(tmp_path / "voc")["num_classes"] == 21


SCRIPTS = [
    "build_voc2012",
    "build_cityscapes",
    "build_coco_voc",
    "build_camvid",
    "build_folder",
    "make_synthetic",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    out = harness.run(f"datasets/{script}.py", "--help", timeout=60)
    assert out.returncode == 0 and "--output_dir" in out.stdout
    if script != "make_synthetic":
        for flag in ("--input_dir", "--splits", "--num_workers", "--skip_bad"):
            assert flag in out.stdout


@pytest.mark.slow
def test_cli_reports_counts_and_errors_without_traceback(tmp_path, capsys):
    root = fx.make_camvid(tmp_path / "raw")
    Image.fromarray(np.full((3, 4), 12, np.uint8)).save(
        root / "valannot" / "0001TP_006690.png"
    )  # class 12 does not exist
    run("build_camvid", "--input_dir", root, "--output_dir", tmp_path / "out", "--skip_bad")
    captured = capsys.readouterr()
    assert "train: 2 examples" in captured.out and "val: 1 examples (1 skipped)" in captured.out
    assert "skipped: " in captured.err and "0001TP_006690.png: label values [12]" in captured.err
    assert tfrecord.read_dataset_info(tmp_path / "out")["splits"] == {"train": 2, "val": 1}
    # As a program: exit status 1, one line naming the file, no traceback, nothing written.
    bad = harness.run(
        "datasets/build_camvid.py",
        "--input_dir",
        root,
        "--output_dir",
        tmp_path / "out2",
        "--splits",
        "val",
        "--num_workers",
        "0",
        "--no_progress",
        timeout=120,
        env={"TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert bad.returncode == 1
    assert "error: " in bad.stderr and "valannot/0001TP_006690.png: label values [12]" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert (
        fx.shard_names(tmp_path / "out2") == []
        and not (tmp_path / "out2" / "dataset.json").exists()
    )


@pytest.mark.skipif(
    not (CAMVID_DIR / "train.txt").is_file(), reason="CamVid not present at ../shared/data/camvid"
)
@pytest.mark.slow
def test_real_camvid(tmp_path):
    specs = raw_datasets.camvid_examples(CAMVID_DIR)
    assert {k: len(v) for k, v in specs.items()} == {"train": 367, "val": 101}
    assert all(
        os.path.isfile(s.image_path) and os.path.isfile(s.label.path)
        for s in specs["train"] + specs["val"]
    )
    from deeplab.data import convert

    reports = convert.convert_splits(
        {"val": specs["val"]},
        tmp_path,
        dataset=datasets_info.camvid(),
        num_workers=2,
        progress=False,
    )
    assert reports["val"].count == 101 and not reports["val"].skipped
    examples = read_split(tmp_path, "val")
    values = set()
    for ex, spec in zip(examples[:5], specs["val"][:5]):
        raw = np.asarray(Image.open(spec.label.path)).astype(int)
        expected = np.where(raw == 11, 255, raw)
        np.testing.assert_array_equal(ex["label"], expected)
        assert ex["image"].shape == (360, 480, 3)
    for ex in examples:
        values |= set(np.unique(ex["label"]).tolist())
    assert values <= set(range(11)) | {255} and len(values & set(range(11))) == 11
