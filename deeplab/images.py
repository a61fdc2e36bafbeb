"""The one image reader: how a file becomes 8-bit RGB pixels, for every binary.

The converters (datasets/*.py through ``deeplab.convert``), ``deeplab.predict``,
``deeplab.visualize`` and the exported SavedModel's ``serve_encoded_images`` (in its graph,
:func:`exif_orientation_tf` / :func:`apply_orientation_tf`) apply the same rules, so one photo
gives one answer whichever way it enters:

======================  ==================================================================
EXIF orientation        applied: the pixels are the ones a viewer shows (a phone photo
                        stored sideways with orientation 6 is turned upright). Label files
                        are read as stored, never turned.
16-bit samples          reduced to their high byte (``v >> 8``), what libpng and therefore
                        TensorFlow's PNG decoder do; floating-point images are an error
                        (no scaling to 8 bits is knowable).
alpha                   dropped (RGBA, LA, PA, palette with transparency), as TensorFlow's
                        decoders do with ``channels=3``; the colour values are kept as stored.
grayscale, 1-bit,       expanded to RGB (palette: the palette's colours).
palette, CMYK, YCbCr
======================  ==================================================================

Each rule that changes anything returns a note (one line) for the caller to print. Errors are
:class:`ImageError` (a ``DataError``) with one line naming the file.

The file-extension list for folders of images is :data:`IMAGE_EXTENSIONS` (lower case;
compare with ``name.lower()``).
"""

import io

import numpy as np

from deeplab.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm")
EXIF_ORIENTATION_TAG = 0x0112

_MODE_NOTES = {
    "L": "grayscale image converted to RGB",
    "LA": "grayscale image with alpha converted to RGB (alpha dropped)",
    "La": "grayscale image with alpha converted to RGB (alpha dropped)",
    "1": "1-bit image converted to RGB",
    "P": "palette image converted to RGB",
    "PA": "palette image with alpha converted to RGB (alpha dropped)",
    "RGBA": "RGBA image converted to RGB (alpha dropped)",
    "RGBa": "RGBA image converted to RGB (alpha dropped)",
    "CMYK": "CMYK image converted to RGB",
    "YCbCr": "YCbCr image converted to RGB",
    "LAB": "Lab image converted to RGB",
    "HSV": "HSV image converted to RGB",
}
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_ORIENTATION_WORDS = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down",
                      5: "transposed", 6: "rotated 90 degrees clockwise", 7: "transversed",
                      8: "rotated 90 degrees counter-clockwise"}


class ImageError(DataError):
    """A file that cannot be read as an image; the message names it and the reason."""


def open_image(source, path=None, what="image"):
    """Opens and fully decodes an image with PIL.

    Args:
      source: a path, or the file's bytes.
      path: the name used in messages (default: ``source`` when it is a path).
      what: the word for the file in messages ("image", "label").

    Returns:
      a loaded ``PIL.Image.Image`` (its ``format`` says what the content is, whatever the name).

    Raises:
      ImageError: missing, unreadable, not an image, corrupt or truncated, or too large to
        decode safely (PIL's decompression-bomb limit).
    """
    from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel

    name = path if path is not None else source
    try:
        if isinstance(source, (bytes, bytearray)):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(source)
        image.load()
    except FileNotFoundError:
        raise ImageError(f"{name}: {what} file not found") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: {what} is not an image file PIL can read") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name}: {what} is too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, OSError) and error.strerror and not isinstance(source, bytes):
            raise ImageError(f"{name}: cannot read {what} file ({error.strerror})") from None
        raise ImageError(f"{name}: {what} is corrupt or truncated ({error})") from None
    return image


def exif_orientation(image):
    """The EXIF orientation (1..8) of a PIL image; 1 when it has none or an invalid one."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # pylint: disable=broad-except  (a damaged EXIF block: no orientation)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(array, orientation):
    """Turns an [H, W, ...] array as EXIF ``orientation`` says (the inverse of how it was stored)."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return np.swapaxes(array, 0, 1)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return np.swapaxes(array[::-1, ::-1], 0, 1)
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


def to_rgb(image, path="image"):
    """The pixels of a loaded PIL image as uint8 [H, W, 3] by the module's rules.

    Returns:
      (array, note): ``note`` is None when the file was 8-bit RGB with no orientation to apply,
      else one line ("<path>: ...") saying what was done.

    Raises:
      ImageError: a floating-point image.
    """
    mode = image.mode
    notes = []
    if mode == "RGB":
        array = np.asarray(image, np.uint8)
    elif mode.startswith("I;16") or mode == "I":
        # High byte of each 16-bit sample (what TensorFlow's PNG decoder gives), then gray -> RGB.
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        gray = (values >> 8).astype(np.uint8)
        array = np.repeat(gray[..., None], 3, axis=-1)
        notes.append(f"16-bit grayscale ({mode}) reduced to 8 bits (high byte) and converted to RGB")
    elif mode == "F":
        raise ImageError(f"{path}: floating-point image (mode F): convert it to 8-bit RGB first "
                         "(the right scaling to 8 bits is not knowable here)")
    else:
        if mode == "P" and "transparency" in image.info:
            notes.append("palette image with transparency converted to RGB (alpha dropped)")
            array = np.asarray(image.convert("RGBA").convert("RGB"), np.uint8)
        else:
            notes.append(_MODE_NOTES.get(mode, f"{mode} image converted to RGB"))
            array = np.asarray(image.convert("RGB"), np.uint8)
    orientation = exif_orientation(image)
    if orientation != 1:
        array = np.ascontiguousarray(apply_orientation(array, orientation))
        notes.append(f"EXIF orientation {orientation} applied "
                     f"({_ORIENTATION_WORDS[orientation]} as stored)")
    return array, (f"{path}: " + "; ".join(notes) if notes else None)


def read_rgb(source, path=None, what="image"):
    """:func:`open_image` then :func:`to_rgb`: (uint8 [H, W, 3], note or None)."""
    name = path if path is not None else source
    return to_rgb(open_image(source, path, what), name)


def encode_png(array, compress_level=1):
    """PNG bytes of a uint8 [H, W, 3] array (lossless)."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# The same EXIF rule inside a TensorFlow graph (the SavedModel's encoded-image signature).
# ---------------------------------------------------------------------------------------------

_MAX_IFD_ENTRIES = 64


def exif_orientation_tf(data):
    """The EXIF orientation (int32 scalar, 1..8; 1 if none) of one encoded JPEG or PNG string.

    Reads the first TIFF block of the file: after ``Exif\\0\\0`` (a JPEG's APP1 segment) or
    after the ``eXIf`` chunk type of a PNG; the byte order, the first IFD and its orientation
    entry (tag 0x0112, type SHORT). Anything unexpected (no block, a bad header, an offset past
    the end, a value outside 1..8) gives 1, as :func:`exif_orientation` does.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    data = tf.convert_to_tensor(data, tf.string)
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff")
    is_png = tf.equal(tf.strings.substr(data, 0, 4), b"\x89PNG")
    marker = tf.where(is_jpeg, tf.constant(b"Exif\x00\x00"), tf.constant(b"eXIf"))
    parts = tf.strings.split(data, sep=marker, maxsplit=1)  # scalar in, [1] or [2] out
    found = tf.logical_and(tf.logical_or(is_jpeg, is_png), tf.equal(tf.size(parts), 2))
    tiff = tf.where(found, parts[-1], tf.constant(b""))
    length = tf.strings.length(tiff)
    padded = tf.strings.join([tiff, tf.constant(b"\x00" * 16)])

    def read_bytes(position, count):
        position = tf.clip_by_value(position, 0, length)
        raw = tf.io.decode_raw(tf.strings.substr(padded, position, count), tf.uint8)
        return tf.cast(raw, tf.int64)

    order = tf.strings.substr(padded, 0, 2)
    little = tf.equal(order, b"II")
    valid = tf.logical_or(little, tf.equal(order, b"MM"))

    def unsigned(raw):  # little- or big-endian bytes -> int64
        weights = tf.cast(256, tf.int64) ** tf.range(tf.size(raw, out_type=tf.int64), dtype=tf.int64)
        return tf.reduce_sum(raw * tf.where(little, weights, tf.reverse(weights, [0])), axis=-1)

    valid = tf.logical_and(valid, tf.equal(unsigned(read_bytes(2, 2)), 42))
    ifd = unsigned(read_bytes(4, 4))
    count = unsigned(read_bytes(tf.cast(tf.minimum(ifd, tf.cast(length, tf.int64)), tf.int32), 2))
    entries_at = tf.cast(tf.minimum(ifd + 2, tf.cast(length, tf.int64)), tf.int32)
    raw = read_bytes(entries_at, 12 * _MAX_IFD_ENTRIES)
    raw = tf.pad(raw, [[0, 12 * _MAX_IFD_ENTRIES - tf.size(raw)]])
    entries = tf.reshape(raw, [_MAX_IFD_ENTRIES, 12])

    def field(column, width):  # per entry: unsigned of bytes [column, column + width)
        part = entries[:, column:column + width]
        weights = tf.cast(256, tf.int64) ** tf.range(width, dtype=tf.int64)
        weights = tf.where(little, weights, tf.reverse(weights, [0]))
        return tf.reduce_sum(part * weights[None, :], axis=-1)

    listed = tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64) < count
    match = tf.logical_and(listed, tf.logical_and(tf.equal(field(0, 2), EXIF_ORIENTATION_TAG),
                                                  tf.equal(field(2, 2), 3)))
    value = tf.reduce_max(tf.where(match, field(8, 2), tf.zeros_like(listed, tf.int64)))
    valid = tf.logical_and(tf.logical_and(found, valid), tf.reduce_any(match))
    valid = tf.logical_and(valid, tf.logical_and(value >= 1, value <= 8))
    return tf.cast(tf.where(valid, value, 1), tf.int32)


def apply_orientation_tf(image, orientation):
    """:func:`apply_orientation` for a [H, W, C] tensor and an int32 scalar orientation."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    branches = [
        lambda: image,                                            # 1 (and anything invalid)
        lambda: tf.reverse(image, [1]),                           # 2
        lambda: tf.reverse(image, [0, 1]),                        # 3
        lambda: tf.reverse(image, [0]),                           # 4
        lambda: tf.transpose(image, [1, 0, 2]),                   # 5
        lambda: tf.image.rot90(image, k=3),                       # 6: 90 degrees clockwise
        lambda: tf.transpose(tf.reverse(image, [0, 1]), [1, 0, 2]),  # 7
        lambda: tf.image.rot90(image, k=1),                       # 8: 90 degrees counter-clockwise
    ]
    index = tf.where(tf.logical_and(orientation >= 1, orientation <= 8), orientation - 1, 0)
    return tf.switch_case(index, branches)
