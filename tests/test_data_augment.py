"""Per-example augmentation ops (Sec. 4.1): pure functions of (image, label, seed),
eager == tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab.data import augment
from deeplab.model import preprocessing

SEEDS = [[0, 0], [1, 2], [7, 99], [123, 4], [5, 5]]


def _image_and_label(height=23, width=31, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = rng.integers(0, 6, (height, width)).astype(np.int32)
    label[rng.random((height, width)) < 0.1] = 255
    return tf.constant(image), tf.constant(label)


def _coordinate_image(height, width):
    """Image whose pixels encode their own position; label = an injective function of the
    position."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
    label = (rows * width + cols) % 200
    return tf.constant(image), tf.constant(label.astype(np.int32))


def _numpy_bilinear(image, height, width):
    """Direct half-pixel bilinear resize: output pixel i reads (i + 0.5) * in / out - 0.5."""

    def axis(n_in, n_out):
        u = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(u).astype(int)
        return low, np.minimum(low + 1, n_in - 1), u - low

    y0, y1, a = axis(image.shape[0], height)
    x0, x1, b = axis(image.shape[1], width)
    image = image.astype(np.float64)
    rows = image[y0] * (1 - a)[:, None, None] + image[y1] * a[:, None, None]
    return rows[:, x0] * (1 - b)[None, :, None] + rows[:, x1] * b[None, :, None]


def test_sample_scale_discrete_values_and_range():
    values = {round(float(augment.sample_scale(tf.constant([i, 3]))), 4) for i in range(300)}
    assert values == {0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0}
    cont = [float(augment.sample_scale(tf.constant([i, 3]), scale_step=0)) for i in range(200)]
    assert 0.5 <= min(cont) and max(cont) < 2.0 and len(set(cont)) == 200
    assert float(augment.sample_scale(tf.constant([1, 1]), min_scale=1.0, max_scale=1.0)) == 1.0
    # step 0.5 in [0.5, 1.75]: 0.5, 1.0, 1.5 only (the last step would pass max_scale)
    values = {
        float(
            augment.sample_scale(tf.constant([i, 0]), min_scale=0.5, max_scale=1.75, scale_step=0.5)
        )
        for i in range(200)
    }
    assert values == {0.5, 1.0, 1.5}
    with pytest.raises(ValueError):
        augment.sample_scale(tf.constant([0, 0]), min_scale=2.0, max_scale=1.0)


def test_scaling_never_interpolates_labels_and_matches_nearest_formula():
    image, label = _image_and_label()
    for scale in (0.5, 0.75, 1.25, 2.0):
        out_image, out_label = augment.scale_image_and_label(image, label, tf.constant(scale))
        h, w = round(23 * scale), round(31 * scale)
        assert out_image.shape == (h, w, 3) and out_label.shape == (h, w)
        assert out_image.dtype == tf.float32 and out_label.dtype == tf.int32
        # Nearest neighbour with half-pixel centres: source index floor((i + 0.5) * in / out).
        rows = np.minimum(np.floor((np.arange(h) + 0.5) * 23 / h).astype(int), 22)
        cols = np.minimum(np.floor((np.arange(w) + 0.5) * 31 / w).astype(int), 30)
        np.testing.assert_array_equal(out_label.numpy(), label.numpy()[rows][:, cols])
        # The image: bilinear with the same half-pixel centres (the label's grid), edges clamped.
        np.testing.assert_allclose(
            out_image.numpy(), _numpy_bilinear(image.numpy(), h, w), atol=1e-3
        )
    same_image, same_label = augment.scale_image_and_label(image, label, tf.constant(1.0))
    np.testing.assert_array_equal(same_image.numpy(), image.numpy().astype(np.float32))
    np.testing.assert_array_equal(same_label.numpy(), label.numpy())


def test_pad_to_size_uses_mean_pixel_and_ignore_label():
    image, label = _image_and_label(5, 4)
    out_image, out_label = augment.pad_to_size(image, label, 8, 6, ignore_label=255)
    assert out_image.shape == (8, 6, 3) and out_label.shape == (8, 6)
    np.testing.assert_array_equal(out_image.numpy()[:5, :4], image.numpy())
    np.testing.assert_allclose(
        out_image.numpy()[5:, :], np.broadcast_to(np.float32(preprocessing.MEAN_RGB), (3, 6, 3))
    )
    np.testing.assert_allclose(
        out_image.numpy()[:, 4:], np.broadcast_to(np.float32(preprocessing.MEAN_RGB), (8, 2, 3))
    )
    assert (out_label.numpy()[5:, :] == 255).all() and (out_label.numpy()[:, 4:] == 255).all()
    np.testing.assert_array_equal(out_label.numpy()[:5, :4], label.numpy())
    # already large enough: unchanged
    big_image, big_label = augment.pad_to_size(image, label, 3, 3)
    assert big_image.shape == (5, 4, 3) and big_label.shape == (5, 4)
    # the mean pixel normalizes to exactly 0
    assert np.all(augment.normalize(out_image).numpy()[5:] == 0.0)


def test_random_crop_and_flip_move_image_and_label_together():
    image, label = _coordinate_image(20, 30)
    offsets = set()
    for seed in SEEDS:
        crop_image, crop_label = augment.random_crop(image, label, tf.constant(seed), 7, 9)
        flip_image, flip_label = augment.random_flip(crop_image, crop_label, tf.constant(seed))
        for img, lab in ((crop_image, crop_label), (flip_image, flip_label)):
            rows, cols = img.numpy()[..., 0].astype(int), img.numpy()[..., 1].astype(int)
            np.testing.assert_array_equal(lab.numpy(), (rows * 30 + cols) % 200)
        offsets.add((int(crop_image[0, 0, 0]), int(crop_image[0, 0, 1])))
    assert len(offsets) > 1  # different seeds, different windows


def test_flip_probability_is_about_one_half():
    image, label = _coordinate_image(2, 3)
    flips = sum(
        int(augment.random_flip(image, label, tf.constant([i, 11]))[1][0, 0] != label[0, 0])
        for i in range(200)
    )
    assert 70 < flips < 130


def _composed(image, label, seed, crop, pad_value=augment.MEAN_RGB, **kw):
    s_scale, s_crop, s_flip = tf.unstack(augment.split_seed(seed, 3))
    image, label = augment.random_scale(image, label, s_scale, **kw)
    image, label = augment.pad_to_size(
        image, label, crop[0], crop[1], ignore_label=255, pad_value=pad_value
    )
    image, label = augment.random_crop(image, label, s_crop, crop[0], crop[1])
    image, label = augment.random_flip(image, label, s_flip)
    return augment.normalize(image), tf.cast(label, tf.int32)


@pytest.mark.parametrize("crop", [(17, 17), (40, 25), (9, 50)])
def test_train_transform_equals_composition_of_single_ops(crop):
    image, label = _image_and_label()
    for seed in SEEDS:
        seed = tf.constant(seed, tf.int64)
        fused = augment.train_transform(image, label, seed, crop_size=crop)
        reference = _composed(image, label, seed, crop)
        np.testing.assert_array_equal(fused[0].numpy(), reference[0].numpy())
        np.testing.assert_array_equal(fused[1].numpy(), reference[1].numpy())
        assert (
            fused[0].shape == crop + (3,) and fused[1].shape == crop and fused[1].dtype == tf.int32
        )


def test_mobilenet_crops_are_padded_with_its_zero_input():
    """The authors pad MobileNetV2 crops with 127.5, which its [-1, 1] input maps to 0; the fused
    transform does the same as padding the raw image with it, and padded pixels reach the
    backbone as exactly 0 (the ResNet mean pixel would reach it as (-0.035, -0.084, -0.185))."""
    from deeplab.model.mobilenet import UnitRangeInput  # pylint: disable=import-outside-toplevel

    pad = preprocessing.pad_pixel("mobilenet_v2")
    assert pad == (127.5, 127.5, 127.5)
    assert preprocessing.pad_pixel("resnet50") == preprocessing.MEAN_RGB
    image, label = _image_and_label(height=11, width=13)
    crop = (40, 25)  # larger than the image at every scale: padding on two sides
    for seed in SEEDS:
        seed = tf.constant(seed, tf.int64)
        fused = augment.train_transform(image, label, seed, crop_size=crop, pad_value=pad)
        reference = _composed(image, label, seed, crop, pad_value=pad)
        np.testing.assert_array_equal(fused[0].numpy(), reference[0].numpy())
        np.testing.assert_array_equal(fused[1].numpy(), reference[1].numpy())
        # the image is at most 22 rows after scaling, so the crop's last row is padding
        assert (fused[1].numpy()[-1] == 255).all()
        unit = UnitRangeInput()(fused[0][None]).numpy()[0]
        np.testing.assert_allclose(unit[-1], 0.0, atol=1e-6)
        # the default (ResNet) padding is the mean pixel: normalized 0, not 0 for MobileNetV2
        default = augment.train_transform(image, label, seed, crop_size=crop)
        assert (default[0].numpy()[-1] == 0).all()
        assert np.abs(UnitRangeInput()(default[0][None]).numpy()[0, -1]).max() > 0.03


def test_train_transform_is_pure_and_identical_eagerly_and_in_tf_data():
    image, label = _image_and_label()
    kw = dict(crop_size=(15, 19), min_scale=0.5, max_scale=2.0, scale_step=0)
    eager = [augment.train_transform(image, label, tf.constant(s, tf.int64), **kw) for s in SEEDS]
    again = [augment.train_transform(image, label, tf.constant(s, tf.int64), **kw) for s in SEEDS]
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(SEEDS, tf.int64))
    ds = ds.map(
        lambda s: augment.train_transform(image, tf.cast(label, tf.uint8), s, **kw),
        num_parallel_calls=4,
    )
    in_data = list(ds.as_numpy_iterator())
    for (e_img, e_lab), (a_img, a_lab), (d_img, d_lab) in zip(eager, again, in_data):
        np.testing.assert_array_equal(e_img.numpy(), a_img.numpy())
        np.testing.assert_array_equal(e_img.numpy(), d_img)
        np.testing.assert_array_equal(e_lab.numpy(), d_lab)
    assert not np.array_equal(eager[0][0].numpy(), eager[1][0].numpy())


def test_train_transform_keeps_labels_aligned_with_image_content():
    """Block image: each 6x6 block has its own colour and its own class; after scale/crop/flip every
    labelled pixel whose 3x3 neighbourhood has one class shows that class's colour."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 10, (5, 6))
    colors = (np.arange(10)[:, None] * np.array([[20, 7, 3]]) + 30).astype(np.uint8)
    label = np.kron(blocks, np.ones((6, 6), int)).astype(np.int32)
    image = colors[label]
    checked = 0
    for seed in SEEDS:
        out_image, out_label = augment.train_transform(
            tf.constant(image), tf.constant(label), tf.constant(seed, tf.int64), crop_size=21
        )
        rgb = preprocessing.denormalize_image(out_image).numpy()
        lab = out_label.numpy()
        assert set(np.unique(lab)) <= set(range(10)) | {255}
        for y in range(1, 20):
            for x in range(1, 20):
                window = lab[y - 1 : y + 2, x - 1 : x + 2]
                if lab[y, x] != 255 and (window == lab[y, x]).all():
                    np.testing.assert_allclose(rgb[y, x], colors[lab[y, x]], atol=1e-3)
                    checked += 1
                elif lab[y, x] == 255 and (window == 255).all():
                    np.testing.assert_allclose(
                        out_image.numpy()[y, x], 0.0
                    )  # padding: the mean pixel
    assert checked > 300


def test_eval_transform_keeps_label_and_normalizes():
    image, label = _image_and_label()
    norm, lab = augment.eval_transform(image, label)
    np.testing.assert_array_equal(lab.numpy(), label.numpy())
    np.testing.assert_array_equal(norm.numpy(), preprocessing.normalize_image(image).numpy())


def test_tf_only_normalization_equals_normalize_image():
    image, _ = _image_and_label()
    np.testing.assert_array_equal(
        augment._normalize_tf(image).numpy(), preprocessing.normalize_image(image).numpy()
    )


def test_window_nearest_indices_equal_tf_image_resize():
    """The crop-window label resize of train_transform picks exactly tf.image.resize's nearest
    pixels."""
    rng = np.random.default_rng(0)
    for in_size in (1, 7, 23, 360, 375, 500, 1024):
        source = tf.range(in_size)[:, tf.newaxis]
        for out_size in {
            1,
            2,
            max(1, in_size // 2),
            in_size,
            in_size + 1,
            2 * in_size,
            *rng.integers(1, 3 * in_size + 2, 5).tolist(),
        }:
            full = tf.image.resize(source[:, :, tf.newaxis], [out_size, 1], method="nearest")[
                :, 0, 0
            ]
            start = int(rng.integers(0, out_size))
            count = int(rng.integers(1, out_size - start + 1))
            window = augment._nearest_source_indices(in_size, out_size, start, count)
            np.testing.assert_array_equal(window.numpy(), full.numpy()[start : start + count])


def test_train_transform_equals_composition_with_continuous_scales():
    image, label = _image_and_label(37, 29, seed=3)
    for i in range(20):
        seed = tf.constant([i, 17], tf.int64)
        fused = augment.train_transform(
            image, label, seed, crop_size=(33, 41), scale_step=0, min_scale=0.3, max_scale=2.7
        )
        reference = _composed(
            image, label, seed, (33, 41), scale_step=0, min_scale=0.3, max_scale=2.7
        )
        np.testing.assert_array_equal(fused[0].numpy(), reference[0].numpy())
        np.testing.assert_array_equal(fused[1].numpy(), reference[1].numpy())
