"""The one image reader: how a file becomes 8-bit RGB pixels, for every binary.

The converters (datasets/*.py through ``deeplab.data.convert``), ``deeplab.predict``,
``deeplab.visualize`` and the exported SavedModel's ``serve_encoded_images`` (in its graph,
:func:`exif_orientation_tf` / :func:`apply_orientation_tf`) apply the same rules, so one photo
gives one answer whichever way it enters:

======================  ==================================================================
EXIF orientation        applied: the pixels are the ones a viewer shows (a phone photo
                        stored sideways with orientation 6 is turned upright). Read from one
                        place only, byte for byte the same in Python and in the graph
                        (:func:`exif_orientation`): the orientation entry (tag 0x0112, SHORT
                        or LONG) of IFD0 of a JPEG's APP1 "Exif" segment (among its first
                        16 segments) or of a PNG's eXIf chunk (among its first 16 chunks).
                        Copies in XMP or text chunks are not read. Label files are read as
                        stored, never turned.
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

The file-extension list for folders of images is :data:`IMAGE_EXTENSIONS` (lower case); match
file names against it with :func:`has_image_extension` and :func:`find_image_file`, which accept
either case.
"""

import io
import pathlib

import numpy as np

from deeplab.common.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm")
EXIF_ORIENTATION_TAG = 0x0112
# Pixels one image (or one serving call, N x H x W) may have by default: 16.8 M, a 4096 x 4096
# photo or 64 of 513 x 513. The SavedModel's cap (--serving_max_pixels) and the demo server's.
DEFAULT_MAX_PIXELS = 4096 * 4096

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
_ORIENTATION_WORDS = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down",
                      5: "transposed", 6: "rotated 90 degrees clockwise", 7: "transversed",
                      8: "rotated 90 degrees counter-clockwise"}


class ImageError(DataError):
    """A file that cannot be read as an image; the message names it and the reason."""


def open_image(data, path, what="image"):
    """Opens and fully decodes a file's bytes with PIL (:func:`read_bytes` reads them).

    Args:
      data: the file's bytes.
      path: the name used in messages.
      what: the word for the file in messages ("image", "label").

    Returns:
      a loaded ``PIL.Image.Image`` (its ``format`` says what the content is, whatever the name).

    Raises:
      ImageError: not an image, corrupt or truncated, or too large to decode safely (PIL's
        decompression-bomb limit).
    """
    # PIL: only the Python reader needs it, not the graph functions the SavedModel uses
    from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise ImageError(f"{path}: {what} is not an image file PIL can read") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{path}: {what} is too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: {what} is corrupt or truncated ({error})") from None
    return image


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SEGMENTS = 16  # JPEG segments / PNG chunks searched for the EXIF block
MAX_IFD_ENTRIES = 256


def _exif_block(data):
    """The TIFF block of a JPEG's APP1 Exif segment or a PNG's eXIf chunk, or None."""
    if data[:3] == b"\xff\xd8\xff":
        pos = 2
        for _ in range(MAX_SEGMENTS):
            if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] in (0xDA, 0xD9):
                return None
            length = int.from_bytes(data[pos + 2:pos + 4], "big")
            if data[pos + 1] == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
                return data[pos + 10:pos + 2 + length]
            pos += 2 + length
        return None
    if data[:8] == _PNG_SIGNATURE:
        pos = 8
        for _ in range(MAX_SEGMENTS):
            if pos + 8 > len(data) or data[pos + 4:pos + 8] == b"IEND":
                return None
            length = int.from_bytes(data[pos:pos + 4], "big")
            if data[pos + 4:pos + 8] == b"eXIf":
                return data[pos + 8:pos + 8 + length]
            pos += 12 + length
    return None


def exif_orientation(data):
    """The EXIF orientation (1..8) of an encoded image file's bytes; 1 when it has none, or
    anything about it is unexpected (see the module docstring for where it is read)."""
    tiff = _exif_block(bytes(data)) if data is not None else None
    if not tiff or tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return 1
    order = "little" if tiff[:2] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[ifd:ifd + 2], order) if ifd + 2 <= len(tiff) else 0
    for index in range(min(count, MAX_IFD_ENTRIES)):
        entry = tiff[ifd + 2 + 12 * index: ifd + 14 + 12 * index]
        if len(entry) < 12:
            return 1
        tag, kind = int.from_bytes(entry[0:2], order), int.from_bytes(entry[2:4], order)
        if tag == EXIF_ORIENTATION_TAG and kind in (3, 4):
            value = int.from_bytes(entry[8:10] if kind == 3 else entry[8:12], order)
            return value if 1 <= value <= 8 else 1
    return 1


def apply_orientation(array, orientation):
    """Turns an [H, W, ...] array as EXIF ``orientation`` says (the inverse of how it was
    stored)."""
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


def to_rgb(image, path="image", orientation=1):
    """The pixels of a loaded PIL image as uint8 [H, W, 3] by the module's rules, turned as
    ``orientation`` says (:func:`exif_orientation` of the file's bytes).

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
        notes.append(f"16-bit grayscale ({mode}) reduced to 8 bits (high byte) and converted to "
                     "RGB")
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
    if orientation != 1:
        array = np.ascontiguousarray(apply_orientation(array, orientation))
        notes.append(f"EXIF orientation {orientation} applied "
                     f"({_ORIENTATION_WORDS[orientation]} as stored)")
    return array, (f"{path}: " + "; ".join(notes) if notes else None)


def has_image_extension(filename):
    """Whether ``filename`` ends in one of :data:`IMAGE_EXTENSIONS`, in any case (``a.JPG``)."""
    return str(filename).lower().endswith(IMAGE_EXTENSIONS)


def find_image_file(folder, name):
    """The image file ``folder/name.EXT``: the first extension of :data:`IMAGE_EXTENSIONS` for
    which that file exists, spelled in lower case or else in upper case (``.jpg``, ``.JPG``,
    ``.jpeg``, ...). Returns a :class:`pathlib.Path`, or None when there is none."""
    for extension in IMAGE_EXTENSIONS:
        for spelled in (extension, extension.upper()):
            path = pathlib.Path(folder) / f"{name}{spelled}"
            if path.is_file():
                return path
    return None


def read_bytes(path, what="image"):
    """A file's bytes; ImageError naming it when it is missing or unreadable."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ImageError(f"{path}: {what} file not found") from None
    except OSError as error:
        raise ImageError(f"{path}: cannot read {what} file ({error.strerror or error})") from None


def read_rgb(source, path=None, what="image"):
    """The file (a path, or its bytes) as uint8 [H, W, 3] by the module's rules, and a note:
    :func:`open_image`, :func:`exif_orientation`, :func:`to_rgb`."""
    name = path if path is not None else source
    data = source if isinstance(source, (bytes, bytearray)) else read_bytes(source, what)
    return to_rgb(open_image(bytes(data), name, what), name, exif_orientation(data))


def encode_png(array, compress_level=1):
    """PNG bytes of a uint8 [H, W, 3] array (lossless)."""
    # PIL: only the Python reader needs it, not the graph functions the SavedModel uses
    from PIL import Image  # pylint: disable=import-outside-toplevel

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# The same EXIF rule inside a TensorFlow graph (the SavedModel's encoded-image signature).
# ---------------------------------------------------------------------------------------------

def exif_orientation_tf(data):
    """:func:`exif_orientation` inside a TensorFlow graph: int32 scalar 1..8 of one encoded
    image string, read from the same place by the same rule (JPEG segments and PNG chunks
    walked up to :data:`MAX_SEGMENTS`, IFD0 entries up to :data:`MAX_IFD_ENTRIES`, SHORT or
    LONG values); 1 for anything unexpected. ``tests/test_images.py`` checks the two agree."""
    # TensorFlow: not imported by converter worker processes, which use the Python reader
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    data = tf.convert_to_tensor(data, tf.string)
    size = tf.cast(tf.strings.length(data), tf.int64)
    padded = tf.strings.join([data, tf.constant(b"\x00" * 16)])

    def raw(string, position, count, length):
        """Bytes [position, position + count) of ``string`` as int64, zeros past ``length``."""
        position = tf.clip_by_value(tf.cast(position, tf.int64), 0, length)
        part = tf.io.decode_raw(tf.strings.substr(string, position, count), tf.uint8)
        return tf.cast(part, tf.int64)

    def big_endian(values):
        weights = tf.cast(256, tf.int64) ** tf.range(tf.size(values, out_type=tf.int64) - 1, -1, -1,
                                                     dtype=tf.int64)
        return tf.reduce_sum(values * weights)

    def text(position, count):
        return tf.strings.substr(padded, tf.clip_by_value(position, 0, size), count)

    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff")
    is_png = tf.equal(tf.strings.substr(data, 0, 8), _PNG_SIGNATURE)
    # Walk the JPEG segments (or PNG chunks) to the EXIF block: its start and size.
    position = tf.where(is_jpeg, tf.constant(2, tf.int64), tf.constant(8, tf.int64))
    active = tf.logical_or(is_jpeg, is_png)
    found = tf.constant(False)
    start = tf.constant(0, tf.int64)
    block = tf.constant(0, tf.int64)
    for _ in range(MAX_SEGMENTS):
        head = raw(padded, position, 4, size)
        # JPEG: FF marker, then the segment's big-endian length (which counts itself).
        jpeg_length = big_endian(head[2:4])
        marker_ok = tf.logical_and(tf.equal(head[0], 0xFF),
                                   tf.logical_and(tf.not_equal(head[1], 0xDA),
                                                  tf.not_equal(head[1], 0xD9)))
        jpeg_alive = tf.logical_and(is_jpeg, tf.logical_and(position + 4 <= size, marker_ok))
        jpeg_hit = tf.logical_and(jpeg_alive, tf.logical_and(
            tf.equal(head[1], 0xE1), tf.equal(text(position + 4, 6), b"Exif\x00\x00")))
        # PNG: big-endian data length, then the chunk type.
        png_length = big_endian(head)
        kind = text(position + 4, 4)
        png_alive = tf.logical_and(is_png, tf.logical_and(position + 8 <= size,
                                                          tf.not_equal(kind, b"IEND")))
        png_hit = tf.logical_and(png_alive, tf.equal(kind, b"eXIf"))
        alive = tf.logical_and(active, tf.where(is_jpeg, jpeg_alive, png_alive))
        hit = tf.logical_and(alive, tf.logical_and(tf.logical_not(found),
                                                   tf.where(is_jpeg, jpeg_hit, png_hit)))
        start = tf.where(hit, tf.where(is_jpeg, position + 10, position + 8), start)
        block = tf.where(hit, tf.where(is_jpeg, jpeg_length - 8, png_length), block)
        found = tf.logical_or(found, hit)
        active = tf.logical_and(alive, tf.logical_not(found))
        position = position + tf.where(is_jpeg, 2 + jpeg_length, 12 + png_length)

    block = tf.maximum(tf.minimum(block, size - tf.minimum(start, size)), 0)
    tiff = tf.where(found, tf.strings.substr(padded, tf.minimum(start, size), block),
                    tf.constant(b""))
    length = tf.cast(tf.strings.length(tiff), tf.int64)
    tiff_padded = tf.strings.join([tiff, tf.constant(b"\x00" * 16)])
    order = tf.strings.substr(tiff_padded, 0, 4)
    little = tf.equal(order, b"II*\x00")
    valid = tf.logical_and(found, tf.logical_or(little, tf.equal(order, b"MM\x00*")))

    def unsigned(values):  # the file's byte order
        weights = tf.cast(256, tf.int64) ** tf.range(tf.size(values, out_type=tf.int64),
                                                     dtype=tf.int64)
        return tf.reduce_sum(values * tf.where(little, weights, tf.reverse(weights, [0])), -1)

    ifd = unsigned(raw(tiff_padded, 4, 4, length))
    count = tf.where(ifd + 2 <= length, unsigned(raw(tiff_padded, ifd, 2, length)), 0)
    entries = raw(tiff_padded, ifd + 2, 12 * MAX_IFD_ENTRIES, length)
    entries = tf.pad(entries, [[0, 12 * MAX_IFD_ENTRIES - tf.size(entries)]])
    entries = tf.reshape(entries, [MAX_IFD_ENTRIES, 12])
    # An entry counts only if all its 12 bytes lie inside the block (as in Python).
    inside = ifd + 14 + 12 * tf.range(MAX_IFD_ENTRIES, dtype=tf.int64) <= length
    listed = tf.range(MAX_IFD_ENTRIES, dtype=tf.int64) < count

    def field(column, width):
        part = entries[:, column:column + width]
        weights = tf.cast(256, tf.int64) ** tf.range(width, dtype=tf.int64)
        return tf.reduce_sum(part * tf.where(little, weights, tf.reverse(weights, [0]))[None], -1)

    kind = field(2, 2)
    value = tf.where(tf.equal(kind, 3), field(8, 2), field(8, 4))
    match = tf.logical_and(tf.equal(field(0, 2), EXIF_ORIENTATION_TAG),
                           tf.logical_or(tf.equal(kind, 3), tf.equal(kind, 4)))
    # The first listed entry that is the orientation, as Python's loop; a short block before
    # it ends the search with "no orientation".
    candidates = tf.logical_and(listed, tf.logical_or(match, tf.logical_not(inside)))
    first = tf.argmax(tf.cast(candidates, tf.int32), output_type=tf.int32)
    chosen = tf.logical_and(tf.reduce_any(candidates),
                            tf.logical_and(tf.gather(match, first), tf.gather(inside, first)))
    value = tf.gather(value, first)
    valid = tf.logical_and(valid, tf.logical_and(chosen, tf.logical_and(value >= 1, value <= 8)))
    return tf.cast(tf.where(valid, value, 1), tf.int32)


def apply_orientation_tf(image, orientation):
    """:func:`apply_orientation` for a [H, W, C] tensor and an int32 scalar orientation."""
    # TensorFlow: not imported by converter worker processes, which use the Python reader
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
