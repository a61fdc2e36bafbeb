"""Fault suite, inference / export / import half (issue 32): each bad case is one line naming the
file or flag (predict skips that input and goes on), or is handled, and leaves the right files.

Case -> outcome now (test):
- an image whose header declares a huge size (PNG, JPEG, GIF, BMP, WebP, TIFF, PPM) -> refused
  from its header, nothing decoded, in the readers and the converters
  (test_a_declared_bomb_is_refused_before_decoding)
- the same sent to the encoded signature -> refused before any decode, InvalidArgumentError naming
  the cap (test_encoded_signature_refuses_a_bomb_before_decoding)
- predict --checkpoint / --model=EXPORT / --tflite on bomb + ok -> the bomb skipped with one line,
  ok processed (test_predict_skips_a_bomb_and_goes_on, test_predict_binary_bomb_then_ok)
- WebP: predict read it, the encoded signature refused it -> both read it, same pixels, same
  answer (test_encoded_signature_takes_webp_as_predict_reads_it)
- a 250-character image name -> processed, outputs under a shortened name
  (test_a_250_character_image_name_is_processed)
- predict --model on a corrupt saved_model.pb / truncated variables -> one line, exit 2
  (test_a_damaged_export_is_one_line)
- a full disk during SavedModel export / TFLite export / predict's outputs -> one line, the
  earlier export intact and no partial folder; predict stops with a line, no partial outputs
  (test_full_disk_in_a_small_tmpfs, test_a_failed_tflite_write_keeps_the_earlier_export)
- --export_dir holding other files (a training run) -> refused before any work, nothing deleted
  (test_export_refuses_a_folder_an_export_would_not_write)
- import_official --output=<a file>; --overwrite onto a training logdir -> one line, exit 1, the
  run intact (test_import_official_output_cases)
"""

import errno
import io
import os
import re
import shlex
import shutil
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from PIL import ImageFile

import export_fixtures as efx
import harness
from deeplab.common import atomic_io
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.data import convert
from deeplab.data import images
from deeplab.export import official
from deeplab.export import predictor
from deeplab.export import saved_model
from deeplab.export import serving
from namespaces import private_tmpfs_or_skip  # pylint: disable=import-error
from namespaces import run_in_namespace  # pylint: disable=import-error

HUGE = 16000  # a declared 16000 x 16000 image: 256 M pixels, 768 MB decoded (fits WebP's 14 bits)
CAP = 48 * 48  # the test export's --serving_max_pixels


def _encode(array, fmt, mode=None, **options):
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, fmt, **options)
    return buffer.getvalue()


def _pixels(height=13, width=21, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _animated_gif(array):
    """Two frames, a comment and a loop extension (sub-blocks to walk before the first frame)."""
    buffer = io.BytesIO()
    frames = [Image.fromarray(array), Image.fromarray(255 - array)]
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], loop=0, comment=b"x")
    return buffer.getvalue()


def _files():
    """Small files of every accepted format (and the variants that move header fields)."""
    array = _pixels()
    return {
        "png": _encode(array, "PNG"),
        "png_palette": _encode(array, "PNG", "P"),
        "png_16bit": _encode(array[..., 0].astype(np.uint16) * 257, "PNG"),
        "jpeg": _encode(array, "JPEG"),
        "jpeg_progressive": _encode(array, "JPEG", progressive=True),
        "jpeg_cmyk": _encode(array, "JPEG", "CMYK"),
        "jpeg_big_icc": _encode(array, "JPEG", icc_profile=b"x" * 70000),  # SOF past 64 KB
        "gif": _encode(array, "GIF"),
        "gif_animated": _animated_gif(array),
        "bmp": _encode(array, "BMP"),
        "webp": _encode(array, "WEBP"),
        "webp_lossless": _encode(array, "WEBP", lossless=True),
        "webp_extended": _encode(
            array, "WEBP", "RGBA", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08"
        ),
        "tiff": _encode(array, "TIFF"),
        "ppm": _encode(array, "PPM"),
        "pgm": _encode(array, "PPM", "L"),
    }


GRAPH_FORMATS = ("png", "jpeg", "gif", "bmp", "webp")  # what tf.io.decode_image reads
_SIZE_TF = tf.function(images.image_size_tf, input_signature=[tf.TensorSpec([], tf.string)])


def _declare(data, height, width):
    """``data`` with its header patched to declare height x width (the pixels stay small)."""
    data = bytearray(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        data[16:24] = struct.pack(">II", width, height)
    elif data[:3] == b"\xff\xd8\xff":
        pos = 2
        while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        data[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
    elif data[:4] == b"GIF8":  # the screen; the first frame reaching past it in _frame_bomb
        data[6:10] = struct.pack("<HH", width, height)
    elif data[:2] == b"BM":
        data[18:26] = struct.pack("<ii", width, height)
    elif data[:4] == b"RIFF" and data[12:16] == b"VP8X":
        data[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif data[:4] == b"RIFF" and data[12:16] == b"VP8L":
        data[21:25] = struct.pack("<I", (width - 1) | ((height - 1) << 14))
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        order = "<" if data[:2] == b"II" else ">"
        ifd = struct.unpack(order + "I", data[4:8])[0]
        for index in range(struct.unpack(order + "H", data[ifd : ifd + 2])[0]):
            at = ifd + 2 + 12 * index
            tag, kind = struct.unpack(order + "HH", data[at : at + 4])
            if tag in (256, 257):
                value = width if tag == 256 else height
                packed = struct.pack(
                    order + ("HH" if kind == 3 else "I"), *((value, 0) if kind == 3 else (value,))
                )
                data[at + 8 : at + 12] = packed
    elif data[:1] == b"P":  # "P6\nW H\n255\n" + pixels
        magic, _, depth, pixels = bytes(data).split(b"\n", 3)
        data = b"\n".join([magic, f"{width} {height}".encode(), depth, pixels])
    else:
        raise AssertionError("no header to patch")
    return bytes(data)


def _frame_bomb():
    """A GIF whose screen is small and whose first frame declares HUGE x HUGE."""
    data = bytearray(_files()["gif"])
    at = data.index(struct.pack("<BHHHH", 0x2C, 0, 0, 21, 13))  # the 21 x 13 frame at (0, 0)
    data[at + 5 : at + 9] = struct.pack("<HH", HUGE, HUGE)
    return bytes(data)


class _Decodes:
    """Records the size of every image PIL decodes (ImageFile.load), to show none was."""

    def __init__(self, monkeypatch):
        self.sizes = []
        load = ImageFile.ImageFile.load

        def recording(image):
            if image.tile:  # not yet decoded (load() returns at once on a loaded image)
                self.sizes.append(image.size)
            return load(image)

        monkeypatch.setattr(ImageFile.ImageFile, "load", recording)


# ----------------------------------------------------------------------------- header sizes


@pytest.mark.parametrize("name", sorted(_files()))
def test_header_size_of_every_accepted_format(name):
    data = _files()[name]
    expected = Image.open(io.BytesIO(data)).size[::-1]
    assert images.image_size(data) == expected
    graph = tuple(int(v) for v in _SIZE_TF(data).numpy())
    assert graph == (expected if name.split("_")[0] in GRAPH_FORMATS else (-1, -1))


def test_a_gif_frame_larger_than_its_screen_counts():
    bomb = _frame_bomb()
    assert images.image_size(bomb) == (HUGE, HUGE)
    assert tuple(int(v) for v in _SIZE_TF(bomb).numpy()) == (HUGE, HUGE)


def test_python_and_graph_header_sizes_agree_on_damaged_files():
    rng = np.random.default_rng(1)
    files = {k: v for k, v in _files().items() if k.split("_")[0] in GRAPH_FORMATS}
    for name, data in files.items():
        for trial in range(12):
            damaged = bytearray(data[:300] if trial % 2 else data)
            for _ in range(1 + trial % 3):
                damaged[int(rng.integers(0, 40))] = int(rng.integers(0, 256))
            if trial % 4 == 0:
                damaged = damaged[: int(rng.integers(0, 40))]
            python = images.image_size(bytes(damaged)) or (-1, -1)
            graph = tuple(int(v) for v in _SIZE_TF(bytes(damaged)).numpy())
            assert python == graph, (name, trial, bytes(damaged[:32]))


@pytest.mark.parametrize(
    "name", ["png", "jpeg", "gif", "bmp", "webp_lossless", "webp_extended", "tiff", "ppm"]
)
def test_a_declared_bomb_is_refused_before_decoding(name, tmp_path, monkeypatch):
    bomb = _declare(_files()[name], HUGE, HUGE)
    assert images.image_size(bomb) == (HUGE, HUGE)
    decodes = _Decodes(monkeypatch)
    path = tmp_path / f"bomb.{name.split('_')[0]}"
    path.write_bytes(bomb)
    message = r"bomb\.\w+: image is 16000x16000 pixels \(256\.0 M, read from its header\), above"
    with pytest.raises(images.ImageTooLargeError, match=message + r".*; not decoded"):
        images.read_rgb(str(path))  # every reader's cap (DECODE_MAX_PIXELS)
    with pytest.raises(convert.BadExample, match=message):  # the converters' reader
        convert.read_image(str(path))
    assert decodes.sizes == []


# ----------------------------------------------------------------------------- the export


@pytest.fixture(scope="module")
def capped_export(tmp_path_factory):
    """The shared tiny run exported with --serving_max_pixels=48x48."""
    run_dir = efx.shared_tiny_run(tmp_path_factory)["run_dir"]
    export_dir = str(tmp_path_factory.mktemp("capped") / "export")
    saved_model.run_export(run_dir, export_dir, saved_model.ExportOptions(max_pixels=CAP))
    return export_dir


def _ok_png(size=(30, 40), seed=0):
    return _encode(efx.structured_images(1, size, seed=seed)[0], "PNG")


@pytest.mark.slow
def test_encoded_signature_refuses_a_bomb_before_decoding(capped_export):
    encoded = tf.saved_model.load(capped_export).signatures[serving.ENCODED_SIGNATURE]
    assert encoded(image_bytes=tf.constant([_ok_png()]))["semantic"].shape == (1, 30, 40)
    bomb = _declare(_ok_png(), HUGE, HUGE)  # IDAT of 30x40: decoding it would fail otherwise
    for batch, declared in (([bomb], HUGE * HUGE), ([_ok_png((40, 40))] * 2, 3200)):
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            encoded(image_bytes=tf.constant(batch))
        message = caught.value.message
        assert (
            f"headers declare] [{declared}] [pixels (the sum of H x W), above the cap of "
            in (message)
            and "nothing was decoded" in message
        ), message
    unreadable = _ok_png()[:20]  # a PNG too short to hold its size
    with pytest.raises(tf.errors.InvalidArgumentError, match="cannot read the image size"):
        encoded(image_bytes=tf.constant([_ok_png(), unreadable]))


@pytest.mark.slow
def test_encoded_signature_takes_webp_as_predict_reads_it(capped_export, tmp_path):
    scene = efx.structured_images(1, (30, 40), seed=5)[0]
    path = tmp_path / "scene.webp"
    path.write_bytes(_encode(scene, "WEBP", lossless=True))
    pixels, _ = predictor.read_image(str(path))
    np.testing.assert_array_equal(pixels, scene)
    encoded = tf.saved_model.load(capped_export).signatures[serving.ENCODED_SIGNATURE]
    got = encoded(image_bytes=tf.constant([path.read_bytes()]))["semantic"][0].numpy()
    np.testing.assert_array_equal(got, serving.SavedModelSegmenter(capped_export)(pixels))


# ----------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def bomb_and_ok(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bomb_and_ok")
    (folder / "bomb.png").write_bytes(_declare(_ok_png(), HUGE, HUGE))
    (folder / "ok.png").write_bytes(_ok_png())
    return folder


@pytest.mark.parametrize("kind", ["checkpoint", "export", "tflite"])
@pytest.mark.slow
def test_predict_skips_a_bomb_and_goes_on(
    kind, capped_export, bomb_and_ok, tmp_path_factory, tmp_path, monkeypatch, library_log
):
    if kind == "checkpoint":
        segmenter = predictor.make_segmenter(
            checkpoint=efx.shared_tiny_run(tmp_path_factory)["run_dir"]
        )
    elif kind == "export":
        segmenter = predictor.make_segmenter(model=capped_export)
    else:
        segmenter = predictor.make_segmenter(model=efx.shared_float_tflite(tmp_path_factory))
    decodes = _Decodes(monkeypatch)
    inputs = [str(bomb_and_ok / "bomb.png"), str(bomb_and_ok / "ok.png")]
    result = predictor.predict_files(segmenter, inputs, str(tmp_path))
    lines = library_log()
    assert [p for p, _ in result["processed"]] == [inputs[1]]
    (skipped,) = [line for line in lines if line.startswith("skipped")]
    cap = CAP if kind == "export" else images.DEFAULT_MAX_PIXELS
    assert skipped.startswith(
        f"skipped {inputs[0]}: image is 16000x16000 pixels (256.0 M, read from its header), "
        f"above the cap of {cap} pixels"
    ), skipped
    assert ("--serving_max_pixels" if kind == "export" else "--max_image_pixels") in skipped
    assert decodes.sizes == [(40, 30)]  # ok.png only
    # A real image above --max_image_pixels: refused the same way, by its header.
    result = predictor.predict_files(segmenter, inputs[1:], str(tmp_path), max_pixels=30 * 39)
    lines = library_log()
    assert not result["processed"] and "30x40 pixels" in lines[-2], lines[-2:]


@pytest.mark.slow
def test_predict_binary_bomb_then_ok(capped_export, bomb_and_ok, tmp_path):
    result = harness.run(
        "deeplab.predict",
        f"--model={capped_export}",
        f"--input={bomb_and_ok / 'bomb.png'},{bomb_and_ok / 'ok.png'}",
        f"--output_dir={tmp_path}",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert len(re.findall(r"^skipped .*bomb\.png: image is 16000x16000 pixels", output, re.M)) == 1
    assert "ok.png (30x40)" in output and sorted(os.listdir(tmp_path)) == [
        "ok.png",
        "ok_color.png",
        "ok_overlay.png",
    ]


def test_a_250_character_image_name_is_processed(tmp_path_factory, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    long_name = "n" * 246 + ".png"  # 250 characters: NAME_overlay.png would be 258
    (folder / long_name).write_bytes(_ok_png())
    (folder / "z.png").write_bytes(_ok_png(seed=1))
    segmenter = predictor.make_segmenter(
        checkpoint=efx.shared_tiny_run(tmp_path_factory)["run_dir"]
    )
    out = tmp_path / "out"
    result = predictor.predict_files(segmenter, [str(folder)], str(out))
    assert len(result["processed"]) == 2 and not result["skipped"]
    names = os.listdir(out)
    assert len(names) == 6 and max(len(n.encode()) for n in names) <= 255
    assert sum(n.startswith("n" * 200) for n in names) == 3
    # The same long name, twice, gives the same short name (reruns overwrite, not pile up).
    predictor.predict_files(segmenter, [str(folder)], str(out))
    assert sorted(os.listdir(out)) == sorted(names)


def test_a_failed_inference_or_write_skips_that_image_only(tmp_path, monkeypatch, library_log):
    """One image's inference fails, another's outputs fail half written (a permission error),
    the third goes through: a line each, no partial set of outputs, an earlier output kept."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.png").write_bytes(_ok_png())
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_overlay.png").write_bytes(b"from an earlier run")

    def segmenter(image):  # a.png, the first, fails
        segmenter.calls += 1
        if segmenter.calls == 1:
            raise tf.errors.InvalidArgumentError(None, None, "the graph said no\nmore detail")
        return np.zeros(image.shape[:2], np.int32)

    segmenter.calls = 0
    write = predictor.write_outputs

    def failing(output_dir, stem, *args, **options):
        if stem == "b":
            predictor.visualization.save_index_png(os.path.join(output_dir, "b.png"), args[1])
            raise PermissionError(errno.EACCES, "Permission denied")
        return write(output_dir, stem, *args, **options)

    monkeypatch.setattr(predictor, "write_outputs", failing)
    result = predictor.predict_files(segmenter, [str(folder)], str(out))
    lines = library_log()
    assert [os.path.basename(p) for p, _ in result["processed"]] == ["c.png"]
    assert f"skipped {folder / 'a.png'}: inference failed (the graph said no)" in lines
    assert (
        f"skipped {folder / 'b.png'}: cannot write its outputs {out / 'b'}*.png (Permission denied)"
    ) in lines
    assert sorted(os.listdir(out)) == ["b_overlay.png", "c.png", "c_color.png", "c_overlay.png"]
    assert (out / "b_overlay.png").read_bytes() == b"from an earlier run"


def _truncate_variables(export_dir):
    path = os.path.join(export_dir, "variables", "variables.data-00000-of-00001")
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def _corrupt_graph(export_dir):
    path = os.path.join(export_dir, "saved_model.pb")
    with open(path, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff" * 40)


@pytest.mark.parametrize("damage", [_corrupt_graph, _truncate_variables])
@pytest.mark.slow
def test_a_damaged_export_is_one_line(capped_export, bomb_and_ok, tmp_path, damage):
    export_dir = str(tmp_path / "damaged")
    shutil.copytree(capped_export, export_dir)
    damage(export_dir)
    part = "saved_model.pb" if damage is _corrupt_graph else "variables/"
    with pytest.raises(UserError, match=rf"^--model=.*damaged: cannot load the SavedModel: {part}"):
        predictor.make_segmenter(model=export_dir)
    if damage is _corrupt_graph:  # the binary: that line, exit 1 (a failure, not a usage error)
        result = harness.run(
            "deeplab.predict",
            f"--model={export_dir}",
            f"--input={bomb_and_ok / 'ok.png'}",
            f"--output_dir={tmp_path / 'out'}",
        )
        errors = [
            line
            for line in result.stderr.splitlines()
            if line.startswith("deeplab.predict: error:")
        ]
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert len(errors) == 1 and "saved_model.pb is damaged or incomplete" in errors[0]


# ----------------------------------------------------------------------------- writing


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "target"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_io.atomic_directory(target, flag="--x") as folder:
            atomic_io.write_text(os.path.join(folder, "new.txt"), "half")
            raise RuntimeError("interrupted")
    assert sorted(os.listdir(tmp_path)) == ["target"] and os.listdir(target) == ["old.txt"]
    with atomic_io.atomic_directory(target, flag="--x") as folder:
        atomic_io.write_text(os.path.join(folder, "new.txt"), "whole")
    assert sorted(os.listdir(tmp_path)) == ["target"] and os.listdir(target) == ["new.txt"]
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o777 & ~atomic_io.current_umask())
    with pytest.raises(ConfigError, match=r"^--x=.*target keeps it$"):
        with atomic_io.atomic_directory(target, flag="--x", replaceable=lambda e: "keeps it"):
            pass
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="afile is a file, not a folder"):
        with atomic_io.atomic_directory(tmp_path / "afile", flag="--x"):
            pass
    monkeypatch.chdir(target)
    with pytest.raises(ConfigError, match=r"^--x=\. is the current folder or holds it"):
        atomic_io.check_directory_target(".", "--x")
    long_target = tmp_path / ("t" * 250)  # temporary names stay short
    with atomic_io.atomic_directory(long_target, flag="--x") as folder:
        atomic_io.write_text(os.path.join(folder, "a" * 250), "ok")
    assert os.listdir(long_target) == ["a" * 250]


def test_export_refuses_a_folder_an_export_would_not_write(tmp_path_factory):
    run_dir = efx.shared_tiny_run(tmp_path_factory)["run_dir"]
    before = sorted(os.listdir(run_dir))
    with pytest.raises(ConfigError, match=r"^--export_dir=.*run holds checkpoint, ckpt-5\."):
        saved_model.run_export(run_dir, run_dir)
    assert sorted(os.listdir(run_dir)) == before


def _listing(folder):
    return sorted(
        (
            os.path.relpath(os.path.join(root, name), folder),
            os.path.getsize(os.path.join(root, name)),
        )
        for root, _, names in os.walk(folder)
        for name in names
    )


@pytest.mark.slow
def test_a_failed_tflite_write_keeps_the_earlier_export(
    capped_export, tmp_path_factory, tmp_path, monkeypatch
):
    export_dir = str(tmp_path / "export")
    shutil.copytree(capped_export, export_dir)
    before = _listing(export_dir)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_io, "write_bytes", full)
    with pytest.raises(
        UserError,
        match=(
            r"^--export_dir=.*export: cannot write the export \(No space left on device\); nothing "
            r"was changed there \(an earlier export is intact\)"
        ),
    ):
        saved_model.run_export(
            efx.shared_tiny_run(tmp_path_factory)["run_dir"],
            export_dir,
            saved_model.ExportOptions(saved_model=False, tflite=True, tflite_input_size=(33, 33)),
        )
    assert _listing(export_dir) == before and os.listdir(tmp_path) == ["export"]


@pytest.mark.slow
def test_a_tflite_only_export_keeps_the_earlier_saved_model(
    capped_export, tmp_path_factory, tmp_path
):
    export_dir = str(tmp_path / "export")
    shutil.copytree(capped_export, export_dir)
    before = _listing(export_dir)
    result = saved_model.run_export(
        efx.shared_tiny_run(tmp_path_factory)["run_dir"],
        export_dir,
        saved_model.ExportOptions(saved_model=False, tflite=True, tflite_input_size=(33, 33)),
    )
    assert result["tflite"] == {"none": os.path.join(export_dir, "deeplab_float32.tflite")}
    saved = ("saved_model.pb", "fingerprint.pb", "variables/", "assets/")  # the SavedModel's
    after = _listing(export_dir)
    assert [e for e in after if e[0].startswith(saved)] == [
        e for e in before if e[0].startswith(saved)
    ]
    assert "deeplab_float32.tflite" in os.listdir(export_dir)
    assert sorted(os.listdir(tmp_path)) == ["export"]
    serving.SavedModelSegmenter(export_dir)  # still loads


@pytest.mark.slow
def test_full_disk_in_a_small_tmpfs(capped_export, tmp_path_factory, bomb_and_ok, tmp_path):
    """On a tmpfs with room for the earlier export and a third of a new one: the export stops
    with one line, the earlier export intact and no partial folder; then, the disk full,
    predict's outputs: one line per image it tried, a line saying it stopped, no partial
    outputs. Needs a private mount namespace (unshare --user --mount); skipped where there is
    none."""
    namespace = private_tmpfs_or_skip(tmp_path)
    run_dir = efx.shared_tiny_run(tmp_path_factory)["run_dir"]
    size_kb = sum(size for _, size in _listing(capped_export)) // 1024
    mount = tmp_path / "small"
    mount.mkdir()
    export = shlex.join(
        harness.command(
            "deeplab.export_saved_model",
            f"--checkpoint={run_dir}",
            f"--export_dir={mount}/export",
            f"--serving_max_pixels={CAP}",
        )
    )
    predict = shlex.join(
        harness.command(
            "deeplab.predict",
            f"--model={mount}/export",
            f"--input={bomb_and_ok}/ok.png,{bomb_and_ok}/ok.png",
            f"--output_dir={mount}/out",
        )
    )
    script = (
        f"mount -t tmpfs -o size={size_kb * 4 // 3 + 64}k tmpfs {mount} && "
        f"cp -r {capped_export} {mount}/export && ls -lR {mount}/export > {tmp_path}/before && "
        f'{export}; echo "export exit $?"; '
        f"ls -lR {mount}/export > {tmp_path}/after; ls -a {mount}; "
        f"mkdir {mount}/out; head -c 100000000 /dev/zero > {mount}/filler 2>/dev/null; "
        f'{predict}; echo "predict exit $?"; '
        f"ls -a {mount}/out"
    )
    result = run_in_namespace(namespace, script)
    out = result.stdout
    exported, predicted = out.split("export exit")
    assert "Traceback" not in out, out[-3000:]
    errors = [
        line.removeprefix("deeplab.export_saved_model: ")
        for line in exported.splitlines()
        if line.startswith("deeplab.export_saved_model: error:")
    ]
    assert errors == [
        f"error: --export_dir={mount}/export: cannot write the export (No space left on device); "
        "nothing was changed there (an earlier export is intact): free space or choose another "
        "folder"
    ], exported[-3000:]
    assert predicted.startswith(" 1\n"), predicted[:200]  # a failure (2: a usage error)
    assert (tmp_path / "before").read_text().replace(str(mount), "") == (
        tmp_path / "after"
    ).read_text().replace(str(mount), "")
    listing = predicted.split("\n", 1)[1].split("predict exit")[0]
    assert ".partial" not in listing and ".old" not in listing, listing
    assert re.search(
        r"skipped \S+ok\.png: cannot write its outputs \S+/out/ok\*\.png \(No space "
        r"left on device\)",
        predicted,
    ), predicted[-3000:]
    assert "stopped: --output_dir=" in predicted and "1 more image(s) not processed" in predicted
    assert "predict exit 1" in predicted
    assert predicted.split("predict exit 1")[1].split() == [".", ".."]  # no partial outputs


# ----------------------------------------------------------------------------- import_official


def _import_report():
    return {
        "source": "test",
        "backbone": "resnet14_tiny",
        "output_stride": 16,
        "num_classes": efx.NUM_CLASSES,
        "class_names": efx.CLASS_NAMES,
    }


@pytest.mark.slow
def test_import_official_output_cases(tmp_path_factory, tmp_path):
    shared = efx.shared_tiny_run(tmp_path_factory)
    run_dir = str(tmp_path / "run")
    shutil.copytree(shared["run_dir"], run_dir)
    for name in ("train.log", "events.out.tfevents.1.host"):  # what a training run also holds
        (tmp_path / "run" / name).write_text("x")
    before = _listing(run_dir)
    a_file = tmp_path / "afile"
    a_file.write_text("not a folder")
    for output, overwrite, expected in (
        (str(a_file), False, rf"--output={a_file} is a file, not a folder; choose a folder"),
        (
            run_dir,
            True,
            rf"--output={run_dir} holds a training run \(ckpt-5\.index, "
            r"events\.out\.tfevents\.1\.host, train\.log\); --overwrite replaces "
            r"only an earlier import \(nothing was deleted\)",
        ),
    ):
        result = harness.run(
            "deeplab.import_official",
            f"--tflite={tmp_path / 'never_read.tflite'}",
            f"--output={output}",
            "--overwrite" if overwrite else "--nooverwrite",
            timeout=120,
        )
        lines = [
            line
            for line in result.stderr.splitlines()
            if line.startswith("deeplab.import_official: error:")
        ]
        # A usage error (another --output, or no --overwrite): exit 2.
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert len(lines) == 1 and re.search(expected, lines[0]), lines
    assert _listing(run_dir) == before and a_file.read_text() == "not a folder"
    # --overwrite does replace an earlier import, whole.
    imported = str(tmp_path / "imported")
    official.write_imported(shared["model"], _import_report(), imported)
    (tmp_path / "imported" / "stale.txt").write_text("from before")
    official.write_imported(shared["model"], _import_report(), imported, overwrite=True)
    assert "stale.txt" not in os.listdir(imported) and "import_report.json" in os.listdir(imported)
    assert sorted(os.listdir(tmp_path)) == ["afile", "imported", "run"]
