"""deeplab.data.images: the one image reader. Each rule on its own, then one photo through every way
in (converter, predict, the SavedModel's encoded-image signature) giving the same pixels."""

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from PIL import ImageOps

import export_fixtures as efx
import raw_fixtures as fx
from deeplab.data import convert
from deeplab.data import images
from deeplab.data import raw_datasets
from deeplab.data import records
from deeplab.data import tfrecord
from deeplab.data.datasets_info import DatasetSpec
from deeplab.data.datasets_info import color_map
from deeplab.export import predictor


def _quadrants(height=6, width=10):
    """An image whose every orientation is distinct (four colours and one white corner)."""
    array = np.zeros((height, width, 3), np.uint8)
    array[: height // 2, : width // 2] = [255, 0, 0]
    array[: height // 2, width // 2 :] = [0, 255, 0]
    array[height // 2 :, : width // 2] = [0, 0, 255]
    array[height // 2 :, width // 2 :] = [255, 255, 0]
    array[0, 0] = [255, 255, 255]
    return array


def _encoded(array, fmt, orientation=None, **options):
    buffer = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[images.EXIF_ORIENTATION_TAG] = orientation
        options["exif"] = exif.tobytes()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def _little_endian_jpeg(array, orientation):
    """A JPEG whose EXIF block is little-endian ("II"), with two IFD entries before ours."""
    entries = [
        (0x010F, 2, 4, b"cam\x00"),
        (0x0110, 2, 4, b"mod\x00"),
        (images.EXIF_ORIENTATION_TAG, 3, 1, struct.pack("<HH", orientation, 0)),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, count) + value for tag, kind, count, value in entries
    )
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00"
    return _encoded(array, "JPEG", exif=b"Exif\x00\x00" + tiff, quality=95)


# The graph functions, traced once for the whole module (as a SavedModel holds them).
_ORIENTATION = tf.function(
    images.exif_orientation_tf, input_signature=[tf.TensorSpec([], tf.string)]
)
_DECODE_TURNED = tf.function(
    lambda d: images.apply_orientation_tf(
        tf.io.decode_image(d, channels=3, expand_animations=False), images.exif_orientation_tf(d)
    ),
    input_signature=[tf.TensorSpec([], tf.string)],
)


# ----------------------------------------------------------------------------- each rule


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.slow
def test_exif_orientation_gives_the_pixels_a_viewer_shows(orientation):
    array = _quadrants()
    data = _encoded(array, "PNG", orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    ours, note = images.read_rgb(data, "photo.png")
    np.testing.assert_array_equal(ours, expected)
    assert (note is None) == (orientation == 1)
    if orientation != 1:
        assert note.startswith(f"photo.png: EXIF orientation {orientation} applied")
    # The same rule inside a TensorFlow graph, for PNG (eXIf chunk) and JPEG (APP1 segment).
    graph = _DECODE_TURNED
    np.testing.assert_array_equal(graph(tf.constant(data)).numpy(), expected)
    jpeg = _encoded(array, "JPEG", orientation, quality=95)
    assert int(_ORIENTATION(tf.constant(jpeg))) == orientation
    stored = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    np.testing.assert_array_equal(
        graph(tf.constant(jpeg)).numpy(), images.apply_orientation(stored, orientation)
    )
    little = _little_endian_jpeg(array, orientation)
    assert int(_ORIENTATION(tf.constant(little))) == orientation
    assert images.exif_orientation(little) == orientation


def test_missing_or_damaged_exif_means_no_turn():
    array = _quadrants()
    cases = {
        "no exif": _encoded(array, "JPEG"),
        "png without exif": _encoded(array, "PNG"),
        "bad tiff header": _encoded(array, "JPEG", exif=b"Exif\x00\x00XX*\x00garbage"),
        "offset past the end": _encoded(array, "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f"),
        "orientation 9": _little_endian_jpeg(array, 9),
        "gif": _encoded(array, "GIF"),
    }
    for name, data in cases.items():
        assert int(_ORIENTATION(tf.constant(data))) == 1, name
        assert images.exif_orientation(data) == 1, name


def test_modes_become_8_bit_rgb_by_the_documented_rules():
    rgb = fx.rgb(6, 8, 3)
    alpha = np.concatenate([rgb, np.full((6, 8, 1), 77, np.uint8)], -1)  # translucent
    palette = Image.fromarray(rgb).convert("P")
    with_transparency = Image.fromarray(rgb).convert("P")
    with_transparency.info["transparency"] = 0
    deep = np.array([[0, 255, 256, 65535], [32767, 32896, 1000, 40000]], np.uint16)
    cases = {
        "rgb": (Image.fromarray(rgb), rgb, None),
        "gray": (Image.fromarray(rgb[..., 1]), np.repeat(rgb[..., 1:2], 3, -1), "grayscale"),
        "rgba (alpha dropped, colours kept)": (
            Image.fromarray(alpha, "RGBA"),
            rgb,
            "alpha dropped",
        ),
        "palette": (palette, np.asarray(palette.convert("RGB")), "palette image"),
        "palette with transparency": (
            with_transparency,
            np.asarray(palette.convert("RGB")),
            "alpha dropped",
        ),
        "16-bit (high byte)": (
            Image.fromarray(deep),
            np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, -1),
            "high byte",
        ),
    }
    for name, (image, expected, note) in cases.items():
        data = io.BytesIO()
        image.save(data, "PNG")
        array, got = images.read_rgb(data.getvalue(), "x.png")
        np.testing.assert_array_equal(array, expected, err_msg=name)
        assert (got is None) if note is None else (note in got), (name, got)
        # TensorFlow's decoder (the SavedModel and the training pipeline) agrees on each rule.
        decoded = tf.io.decode_image(data.getvalue(), channels=3, expand_animations=False).numpy()
        np.testing.assert_array_equal(decoded, expected, err_msg=name)
    with pytest.raises(images.ImageError, match=r"^f.tif: floating-point image \(mode F\)"):
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((2, 2), np.float32)).save(buffer, "TIFF")
        images.read_rgb(buffer.getvalue(), "f.tif")


def test_bad_files_are_one_line_naming_them(tmp_path):
    with pytest.raises(images.ImageError, match=r"missing.png: image file not found$"):
        images.read_rgb(str(tmp_path / "missing.png"))
    (tmp_path / "text.png").write_bytes(b"hello")
    with pytest.raises(
        images.ImageError, match=r"text.png: image is not an image file PIL can read$"
    ):
        images.read_rgb(str(tmp_path / "text.png"))
    data = _encoded(fx.rgb(40, 40, 0), "PNG")
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(images.ImageError, match=r"cut.png: image is corrupt or truncated"):
        images.read_rgb(str(tmp_path / "cut.png"))


def test_one_extension_list_matched_in_either_case(tmp_path):
    assert all(e == e.lower() for e in images.IMAGE_EXTENSIONS)
    assert not hasattr(raw_datasets, "IMAGE_EXTENSIONS")
    assert images.has_image_extension("a.JPG") and images.has_image_extension("b.tiff")
    assert not images.has_image_extension("notes.txt")
    assert images.find_image_file(tmp_path, "a") is None
    (tmp_path / "a.PNG").write_bytes(b"")
    assert images.find_image_file(tmp_path, "a") == tmp_path / "a.PNG"
    (tmp_path / "a.jpeg").write_bytes(b"")  # .jpeg comes before .png in the list
    assert images.find_image_file(tmp_path, "a") == tmp_path / "a.jpeg"


# ---------------------------------------------------------------------------- one photo, one answer


@pytest.mark.slow
def test_a_turned_photo_gives_the_same_pixels_and_answer_everywhere(tmp_path, tmp_path_factory):
    photo = efx.structured_images(1, (24, 32), seed=7)[0]
    data = _encoded(photo, "PNG", orientation=6)  # stored 24x32, shown 32 high and 24 wide
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images" / "img0.png").write_bytes(data)
    fx.save(tmp_path / "labels" / "img0.png", np.zeros((32, 24), np.uint8))
    (tmp_path / "train.txt").write_text("img0\n")
    shown = np.rot90(photo, k=-1)

    # Converter: stores the shown pixels (lossless PNG), with a note.
    specs = raw_datasets.folder_examples(tmp_path, ["train"])
    spec = DatasetSpec("toy", 3, 255, ("a", "b", "c"), color_map(3))
    reports = convert.convert_splits(
        specs, tmp_path / "out", dataset=spec, num_workers=0, progress=False
    )
    assert "EXIF orientation 6 applied" in reports["train"].notes[0]
    record = next(iter(tf.data.TFRecordDataset(tfrecord.list_shards(tmp_path / "out", "train"))))
    np.testing.assert_array_equal(records.decode_example(record)["image"].numpy(), shown)

    # predict (and visualize, which calls the same reader).
    image, note = predictor.read_image(str(tmp_path / "images" / "img0.png"))
    np.testing.assert_array_equal(image, shown)
    assert note.startswith("EXIF orientation 6 applied")

    # The SavedModel: the encoded bytes give what serving_default gives for the shown pixels.
    loaded = tf.saved_model.load(efx.shared_export(tmp_path_factory)["export_dir"])
    encoded = loaded.signatures["serve_encoded_images"](image_bytes=tf.constant([data]))
    dense = loaded.signatures["serving_default"](images=tf.constant(shown[None]))
    assert encoded["semantic"].shape == (1, 32, 24)
    np.testing.assert_array_equal(encoded["semantic"].numpy(), dense["semantic"].numpy())
    np.testing.assert_allclose(
        encoded["probabilities"].numpy(), dense["probabilities"].numpy(), atol=1e-6
    )


def _tiff(order, orientation, kind=3, before=0):
    """A TIFF block whose IFD0 holds ``before`` other entries, then the orientation."""
    fmt = "<" if order == b"II" else ">"
    entries = [(0x9000 + i, 3, struct.pack(fmt + "HH", 1, 0)) for i in range(before)]
    value = (
        struct.pack(fmt + "HH", orientation, 0)
        if kind == 3
        else struct.pack(fmt + "I", orientation)
    )
    entries.append((images.EXIF_ORIENTATION_TAG, kind, value))
    ifd = struct.pack(fmt + "H", len(entries)) + b"".join(
        struct.pack(fmt + "HHI", tag, k, 1) + v for tag, k, v in entries
    )
    return order + struct.pack(fmt + "HI", 42, 8) + ifd + b"\x00" * 4


def test_python_and_graph_read_the_orientation_from_the_same_place():
    """deeplab.data.images.exif_orientation (converters, predict) and exif_orientation_tf (the
    SavedModel) agree on every kind of file, including the ones PIL's getexif() reads
    differently (XMP copies, text-chunk profiles, a decoy "Exif" string before the APP1)."""
    from PIL import PngImagePlugin  # pylint: disable=import-outside-toplevel

    array = _quadrants()
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
        'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    itxt = PngImagePlugin.PngInfo()
    itxt.add_itxt("XML:com.adobe.xmp", xmp)
    profile = PngImagePlugin.PngInfo()
    raw = _tiff(b"MM", 6)
    profile.add_text("Raw profile type exif", f"\nexif\n{len(raw):8}\n{raw.hex()}\n", zip=True)
    jpeg = _encoded(array, "JPEG", exif=b"Exif\x00\x00" + _tiff(b"II", 6))
    comment = b"\xff\xfe" + struct.pack(">H", 12) + b"Exif\x00\x00MM\x00\x00"
    cases = {  # file -> the orientation both must read
        "big-endian SHORT": (_encoded(array, "JPEG", exif=b"Exif\x00\x00" + _tiff(b"MM", 3)), 3),
        "little-endian LONG": (
            _encoded(array, "JPEG", exif=b"Exif\x00\x00" + _tiff(b"II", 8, 4)),
            8,
        ),
        "big-endian LONG": (_encoded(array, "JPEG", exif=b"Exif\x00\x00" + _tiff(b"MM", 5, 4)), 5),
        "100 entries before it": (
            _encoded(array, "JPEG", exif=b"Exif\x00\x00" + _tiff(b"II", 7, before=100)),
            7,
        ),
        "a comment holding Exif before the APP1": (jpeg[:2] + comment + jpeg[2:], 6),
        "PNG eXIf after text chunks": (
            _encoded(array, "PNG", pnginfo=itxt, exif=_tiff(b"II", 2)),
            2,
        ),
        "JPEG with XMP only": (_encoded(array, "JPEG", xmp=xmp.encode()), 1),
        "PNG with XMP only": (_encoded(array, "PNG", pnginfo=itxt), 1),
        "PNG with a text-chunk EXIF profile only": (_encoded(array, "PNG", pnginfo=profile), 1),
        "APP1 cut short": (b"\xff\xd8\xff\xe1\x00\x08Exif\x00\x00", 1),
        "IFD past the end": (
            _encoded(array, "JPEG", exif=b"Exif\x00\x00II*\x00\xf0\xff\xff\xff"),
            1,
        ),
        "empty": (b"", 1),
    }
    for name, (data, expected) in cases.items():
        assert images.exif_orientation(data) == expected, name
        assert int(_ORIENTATION(tf.constant(data))) == expected, name
