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
# photo or 64 of 513 x 513. The SavedModel's cap (--serving_max_pixels), the demo server's and
# predict's (--max_image_pixels).
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


def open_image(data, path, what="image", max_pixels=None, hint=""):
    """Opens and fully decodes a file's bytes with PIL (:func:`read_bytes` reads them), after
    refusing one whose header declares more than ``max_pixels`` pixels (default
    :data:`DECODE_MAX_PIXELS`; 0: PIL's own limit only): :func:`check_image_size`, then PIL's
    size of the opened (not yet decoded) file for any format that function does not read.

    Args:
      data: the file's bytes.
      path: the name used in messages.
      what: the word for the file in messages ("image", "label").
      max_pixels, hint: the cap and the end of its message (:func:`check_image_size`).

    Returns:
      a loaded ``PIL.Image.Image`` (its ``format`` says what the content is, whatever the name).

    Raises:
      ImageError: not an image, corrupt or truncated, or too large to decode safely (the cap,
        :class:`ImageTooLargeError`, or PIL's decompression-bomb limit).
    """
    # PIL: only the Python reader needs it, not the graph functions the SavedModel uses
    from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel

    max_pixels = DECODE_MAX_PIXELS if max_pixels is None else max_pixels
    check_image_size(data, path, max_pixels, what, hint)
    try:
        image = Image.open(io.BytesIO(data))
        _refuse_above_cap((image.height, image.width), path, max_pixels, what, hint)
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


# ---------------------------------------------------------------------------------------------
# The pixel cap: image dimensions read from the file's header, before anything is decoded.
# ---------------------------------------------------------------------------------------------

# (DEFAULT_MAX_PIXELS, above: also predict's --max_image_pixels.)
# Most pixels any reader decodes (the converters and dataset tools; 201 MB as RGB).
DECODE_MAX_PIXELS = 8192 * 8192
MAX_HEADER_STEPS = 1024  # JPEG markers (fill bytes included) walked to the frame header
_JPEG_STANDALONE = (0x01, 0xD8) + tuple(range(0xD0, 0xD8))
_JPEG_SOF = tuple(m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC))


class ImageTooLargeError(ImageError):
    """An image whose header declares more pixels than the reader's cap (nothing decoded)."""


def _jpeg_size(data):
    pos, size = 2, len(data)
    for _ in range(MAX_HEADER_STEPS):
        if pos + 4 > size or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
        elif marker in _JPEG_STANDALONE:
            pos += 2
        elif marker in (0xDA, 0xD9):  # scan data or the end before any frame header
            return None
        elif marker in _JPEG_SOF:
            if pos + 9 > size:
                return None
            return (int.from_bytes(data[pos + 5:pos + 7], "big"),
                    int.from_bytes(data[pos + 7:pos + 9], "big"))
        else:
            length = int.from_bytes(data[pos + 2:pos + 4], "big")
            if length < 2:
                return None
            pos += 2 + length
    return None


def _gif_size(data):
    """The logical screen, enlarged to the first frame where that frame reaches past it (as
    PIL does; giflib allocates the frame's own size)."""
    if len(data) < 13:
        return None
    height, width = int.from_bytes(data[8:10], "little"), int.from_bytes(data[6:8], "little")
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # the global palette
    in_blocks = False  # walking an extension's data sub-blocks
    for _ in range(MAX_HEADER_STEPS):
        if pos >= len(data):
            return None
        if in_blocks:
            in_blocks = data[pos] != 0
            pos += 1 + data[pos]
        elif data[pos] == 0x21:  # an extension: introducer, label, then sub-blocks
            pos, in_blocks = pos + 2, True
        elif data[pos] == 0x2C and pos + 9 <= len(data):  # the first image descriptor
            left, top, frame_width, frame_height = (
                int.from_bytes(data[pos + k:pos + k + 2], "little") for k in (1, 3, 5, 7))
            return max(height, top + frame_height), max(width, left + frame_width)
        else:
            return None
    return None


def _tiff_size(data):
    order = {b"II*\x00": "little", b"MM\x00*": "big"}.get(bytes(data[:4]))
    if order is None:
        return None
    ifd = int.from_bytes(data[4:8], order)
    count = int.from_bytes(data[ifd:ifd + 2], order) if ifd + 2 <= len(data) else 0
    found = {}
    for index in range(min(count, MAX_IFD_ENTRIES)):
        entry = data[ifd + 2 + 12 * index: ifd + 14 + 12 * index]
        if len(entry) < 12:
            break
        tag, kind = int.from_bytes(entry[0:2], order), int.from_bytes(entry[2:4], order)
        if tag in (256, 257) and kind in (3, 4):
            found[tag] = int.from_bytes(entry[8:10] if kind == 3 else entry[8:12], order)
    return (found[257], found[256]) if len(found) == 2 else None


def _netpbm_size(data):
    if len(data) < 3 or data[0:1] != b"P" or data[1:2] not in (b"1", b"2", b"3", b"4", b"5", b"6"):
        return None
    numbers, pos, head = [], 2, bytes(data[:1024])
    while len(numbers) < 2 and pos < len(head):
        char = head[pos:pos + 1]
        if char == b"#":
            end = head.find(b"\n", pos)
            pos = len(head) if end < 0 else end + 1
        elif char.isspace():
            pos += 1
        elif char.isdigit():
            end = pos
            while end < len(head) and head[end:end + 1].isdigit():
                end += 1
            numbers.append(int(head[pos:end]))
            pos = end
        else:
            return None
    return (numbers[1], numbers[0]) if len(numbers) == 2 else None


def image_size(data):
    """(height, width) of an encoded image as its header declares them, read from the bytes
    without decoding anything; None when the header is not one of these or is damaged.

    PNG: the IHDR chunk. JPEG: the first frame header (SOF0..SOF15 markers, walked past up to
    :data:`MAX_HEADER_STEPS` other segments). GIF: the logical screen, or the first frame where
    it reaches past the screen (later frames of an animation are not read).
    BMP: the DIB header (a negative height means top-down). WebP: the VP8, VP8L or VP8X header.
    TIFF: ImageWidth / ImageLength of IFD0. PPM / PGM (P1..P6): the first two numbers of the
    text header. :func:`image_size_tf` reads the same fields in a TensorFlow graph (JPEG, PNG,
    GIF, BMP and WebP, what the SavedModel decodes).
    """
    data = bytes(data)
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    if data[:8] == _PNG_SIGNATURE:
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data[:4] == b"GIF8":
        return _gif_size(data)
    if data[:2] == b"BM":
        if len(data) < 26:
            return None
        if int.from_bytes(data[14:18], "little") == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            return int.from_bytes(data[20:22], "little"), int.from_bytes(data[18:20], "little")
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)
        return (abs(height), width) if width >= 0 else None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
            return (int.from_bytes(data[28:30], "little") & 0x3FFF,
                    int.from_bytes(data[26:28], "little") & 0x3FFF)
        if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
            bits = int.from_bytes(data[21:25], "little")
            return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
        if chunk == b"VP8X" and len(data) >= 30:
            return (int.from_bytes(data[27:30], "little") + 1,
                    int.from_bytes(data[24:27], "little") + 1)
        return None
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    return _netpbm_size(data)


def check_image_size(data, path, max_pixels, what="image", hint=""):
    """Refuses an image whose header declares more than ``max_pixels`` pixels (H x W), before
    any decoding (:func:`image_size`); 0 or None: no cap.

    Raises:
      ImageTooLargeError: one line naming ``path``, the declared size and the cap, then
        ``hint`` (e.g. "; raise --max_image_pixels").
    """
    size = image_size(data) if max_pixels else None
    if size is not None:
        _refuse_above_cap(size, path, max_pixels, what, hint)
    return size


def _refuse_above_cap(size, path, max_pixels, what, hint):
    height, width = size
    if max_pixels and height * width > max_pixels:
        cap = f" ({max_pixels / 1e6:.1f} M)" if max_pixels >= 1e6 else ""
        raise ImageTooLargeError(
            f"{path}: {what} is {height}x{width} pixels ({height * width / 1e6:.1f} M, read from "
            f"its header), above the cap of {int(max_pixels)} pixels{cap}; not decoded{hint}"
        )


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


def read_rgb(source, path=None, what="image", max_pixels=None, hint=""):
    """The file (a path, or its bytes) as uint8 [H, W, 3] by the module's rules, and a note:
    :func:`open_image` (``max_pixels``, ``hint``: its cap), :func:`exif_orientation`,
    :func:`to_rgb`."""
    name = path if path is not None else source
    data = source if isinstance(source, (bytes, bytearray)) else read_bytes(source, what)
    image = open_image(bytes(data), name, what, max_pixels, hint)
    return to_rgb(image, name, exif_orientation(data))


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


class _HeaderTF:
    """The bytes of one encoded image string in a TensorFlow graph, read as int64 numbers (zeros
    past the end), for :func:`image_size_tf`."""

    # The states of a header walk (the GIF blocks, the JPEG markers).
    RUNNING, FOUND, FAILED = 0, 1, 2

    def __init__(self, data):
        # TensorFlow: not imported by converter worker processes, which use the Python reader
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        self.tf = tf
        self.size = tf.cast(tf.strings.length(data), tf.int64)
        self.padded = tf.strings.join([data, tf.constant(b"\x00" * 64)])
        self.unknown = tf.constant([-1, -1], tf.int64)

    def raw(self, position, count):
        """Bytes [position, position + count) as int64, zeros past the end (count <= 64)."""
        tf = self.tf
        position = tf.clip_by_value(tf.cast(position, tf.int64), 0, self.size)
        part = tf.io.decode_raw(tf.strings.substr(self.padded, position, count), tf.uint8)
        return tf.cast(part, tf.int64)

    def number(self, values, start, stop, order):
        """The unsigned integer in bytes [start, stop) of ``values``."""
        weights = [256**i for i in range(stop - start)]
        weights = weights[::-1] if order == "big" else weights
        return self.tf.reduce_sum(values[start:stop] * self.tf.constant(weights, self.tf.int64))

    def text(self, position, count):
        return self.tf.strings.substr(self.padded, position, count)


def _gif_size_tf(header, head):
    """(is a GIF, its size): the logical screen grown to every frame, as _gif_size's loop."""
    tf, number, raw, size = header.tf, header.number, header.raw, header.size
    running, found, failed = header.RUNNING, header.FOUND, header.FAILED
    is_gif = tf.logical_and(tf.equal(header.text(0, 4), b"GIF8"), size >= 13)
    screen = tf.stack([number(head, 8, 10, "little"), number(head, 6, 8, "little")])
    palette = tf.where(tf.bitwise.bitwise_and(head[10], 0x80) > 0,
                       tf.bitwise.left_shift(tf.constant(3, tf.int64),
                                             tf.bitwise.bitwise_and(head[10], 7) + 1),
                       tf.constant(0, tf.int64))

    def gif_walk(step, position, in_blocks, state, result):  # as _gif_size's loop
        block = raw(position, 9)
        past = position >= size
        descriptor = tf.logical_and(tf.equal(block[0], 0x2C), position + 9 <= size)
        frame = tf.stack([number(block, 3, 5, "little") + number(block, 7, 9, "little"),
                          number(block, 1, 3, "little") + number(block, 5, 7, "little")])
        extension = tf.equal(block[0], 0x21)
        state = tf.where(past, failed, tf.where(in_blocks, running, tf.where(
            extension, running, tf.where(descriptor, found, failed))))
        position = position + tf.where(in_blocks, 1 + block[0], tf.constant(2, tf.int64))
        in_blocks = tf.where(in_blocks, tf.not_equal(block[0], 0), extension)
        return step + 1, position, in_blocks, state, tf.maximum(screen, frame)

    _, _, _, gif_state, gif_frame = tf.while_loop(
        lambda step, position, in_blocks, state, result: tf.logical_and(
            step < MAX_HEADER_STEPS, tf.equal(state, running)),
        gif_walk,
        (tf.constant(0), 13 + palette, tf.constant(False), tf.where(is_gif, running, failed),
         header.unknown),
    )
    return is_gif, tf.where(tf.equal(gif_state, found), gif_frame, header.unknown)


def _jpeg_size_tf(header):
    """(is a JPEG, its size): the markers walked to the first frame header, as _jpeg_size."""
    tf, number, raw, size = header.tf, header.number, header.raw, header.size
    running, found, failed = header.RUNNING, header.FOUND, header.FAILED
    is_jpeg = tf.equal(header.text(0, 3), b"\xff\xd8\xff")

    def walk(step, position, state, result):
        segment = raw(position, 9)
        marker = segment[1]
        fail = tf.logical_or(position + 4 > size, tf.not_equal(segment[0], 0xFF))
        fill = tf.equal(marker, 0xFF)
        standalone = tf.reduce_any(tf.equal(marker, tf.constant(_JPEG_STANDALONE, tf.int64)))
        stop = tf.logical_or(tf.equal(marker, 0xDA), tf.equal(marker, 0xD9))
        sof = tf.reduce_any(tf.equal(marker, tf.constant(_JPEG_SOF, tf.int64)))
        length = number(segment, 2, 4, "big")
        frame = tf.stack([number(segment, 5, 7, "big"), number(segment, 7, 9, "big")])
        # The first of these that holds decides, in the order of _jpeg_size's branches.
        state = tf.where(fail, failed, tf.where(
            tf.logical_or(fill, standalone), running, tf.where(
                stop, failed, tf.where(
                    sof, tf.where(position + 9 > size, failed, found),
                    tf.where(length < 2, failed, running)))))
        one, two = tf.constant(1, tf.int64), tf.constant(2, tf.int64)
        position = position + tf.where(fill, one, tf.where(standalone, two, two + length))
        return step + 1, position, state, tf.where(sof, frame, result)

    _, _, state, frame = tf.while_loop(
        lambda step, position, state, result: tf.logical_and(step < MAX_HEADER_STEPS,
                                                             tf.equal(state, running)),
        walk,
        (tf.constant(0), tf.constant(2, tf.int64), tf.where(is_jpeg, running, failed),
         header.unknown),
    )
    return is_jpeg, tf.where(tf.equal(state, found), frame, header.unknown)


def image_size_tf(data):
    """:func:`image_size` inside a TensorFlow graph for the formats the graph decodes (JPEG, PNG,
    GIF, BMP, WebP): int64 [2] (height, width) of one encoded image string, read from the same
    header fields by the same rules without decoding; (-1, -1) where :func:`image_size` says
    None (and for TIFF / PPM / PGM, which no graph decodes). ``tests/test_images.py`` checks
    the two agree."""
    # TensorFlow: not imported by converter worker processes, which use the Python reader
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    header = _HeaderTF(tf.convert_to_tensor(data, tf.string))
    number, text, size = header.number, header.text, header.size
    head = header.raw(0, 32)
    is_png = tf.logical_and(tf.equal(text(0, 8), _PNG_SIGNATURE),
                            tf.logical_and(size >= 24, tf.equal(text(12, 4), b"IHDR")))
    png = tf.stack([number(head, 20, 24, "big"), number(head, 16, 20, "big")])
    is_gif, gif = _gif_size_tf(header, head)
    is_bmp = tf.logical_and(tf.equal(text(0, 2), b"BM"), size >= 26)
    core = tf.equal(number(head, 14, 18, "little"), 12)

    def signed(value):
        return tf.where(value >= 2**31, value - 2**32, value)

    bmp_width = tf.where(core, number(head, 18, 20, "little"),
                         signed(number(head, 18, 22, "little")))
    bmp_height = tf.where(core, number(head, 20, 22, "little"),
                          tf.abs(signed(number(head, 22, 26, "little"))))
    is_bmp = tf.logical_and(is_bmp, bmp_width >= 0)
    bmp = tf.stack([bmp_height, bmp_width])
    is_webp = tf.logical_and(tf.equal(text(0, 4), b"RIFF"), tf.equal(text(8, 4), b"WEBP"))
    chunk = text(12, 4)
    is_vp8 = tf.logical_and(is_webp, tf.logical_and(tf.equal(chunk, b"VP8 "), tf.logical_and(
        size >= 30, tf.equal(text(23, 3), b"\x9d\x01\x2a"))))
    vp8 = tf.bitwise.bitwise_and(tf.stack([number(head, 28, 30, "little"),
                                           number(head, 26, 28, "little")]), 0x3FFF)
    is_vp8l = tf.logical_and(is_webp, tf.logical_and(
        tf.equal(chunk, b"VP8L"), tf.logical_and(size >= 25, tf.equal(head[20], 0x2F))))
    bits = number(head, 21, 25, "little")
    vp8l = tf.stack([tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF),
                     tf.bitwise.bitwise_and(bits, 0x3FFF)]) + 1
    is_vp8x = tf.logical_and(is_webp, tf.logical_and(tf.equal(chunk, b"VP8X"), size >= 30))
    vp8x = tf.stack([number(head, 27, 30, "little"), number(head, 24, 27, "little")]) + 1
    is_jpeg, jpeg = _jpeg_size_tf(header)
    result = header.unknown
    for hit, value in ((is_vp8x, vp8x), (is_vp8l, vp8l), (is_vp8, vp8), (is_bmp, bmp),
                       (is_gif, gif), (is_png, png), (is_jpeg, jpeg)):
        result = tf.where(hit, value, result)
    return result
