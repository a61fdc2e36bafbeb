"""The sample photos bundled with the demo page (deeplab/export/demo_page/samples/), drawn here.

Made, not photographed, so the package ships no third-party pictures (CamVid is CC BY-NC): two
scenes of the quick start's synthetic dataset (`deeplab.data.synthetic`, 5 classes: what the
quick start's model was trained on) and one street scene drawn with PIL (sky, buildings, road,
pavement, a tree, a car) for street models. Pixels are a function of this code only;
`tests/test_serve.py` checks that the committed files hold them.

    python tests/demo_samples.py      # rewrites the PNGs
"""

import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(REPO, "deeplab", "export", "demo_page", "samples")


def shapes(seed, size):
    """A scene of the quick start's synthetic dataset (5 classes) at ``size`` (H, W)."""
    from deeplab.data import synthetic

    image, _ = synthetic.make_example(np.random.default_rng(seed), image_size=size, num_classes=5)
    return image


def street(size=(240, 320)):
    """A drawn street: sky, two rows of buildings with windows, pavement, road with lane
    marks, a tree and a car, with a little noise so it is not flat."""
    from PIL import Image
    from PIL import ImageDraw

    height, width = size
    rng = np.random.default_rng(31)
    sky = np.linspace([120, 170, 225], [205, 225, 245], height).astype(np.float32)
    pixels = np.repeat(sky[:, None, :], width, axis=1)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    horizon = int(height * 0.58)
    x = 0
    for i, (w, h, color) in enumerate(
        [
            (70, 105, (168, 120, 98)),
            (55, 80, (190, 182, 165)),
            (80, 125, (140, 110, 90)),
            (60, 95, (205, 196, 176)),
            (75, 70, (156, 140, 128)),
        ]
    ):
        draw.rectangle([x, horizon - h, x + w, horizon], fill=color)
        for wy in range(horizon - h + 10, horizon - 14, 18):
            for wx in range(x + 8, x + w - 12, 16):
                draw.rectangle([wx, wy, wx + 8, wy + 10], fill=(70, 90, 110))
        x += w
    draw.rectangle([0, horizon, width, horizon + 14], fill=(176, 172, 166))  # pavement
    draw.polygon(
        [(0, horizon + 14), (width, horizon + 14), (width, height), (0, height)], fill=(92, 92, 98)
    )
    for lane_x in range(10, width, 60):
        draw.rectangle([lane_x, height - 40, lane_x + 30, height - 36], fill=(235, 235, 225))
    draw.rectangle([250, horizon - 50, 256, horizon + 8], fill=(90, 64, 40))  # tree
    draw.ellipse([224, horizon - 100, 284, horizon - 38], fill=(60, 120, 50))
    car_top = horizon + 20
    draw.rounded_rectangle([60, car_top + 14, 190, car_top + 50], radius=8, fill=(170, 30, 40))
    draw.polygon(
        [(88, car_top + 14), (104, car_top - 6), (152, car_top - 6), (170, car_top + 14)],
        fill=(150, 25, 35),
    )
    draw.polygon(
        [(96, car_top + 12), (108, car_top - 2), (126, car_top - 2), (126, car_top + 12)],
        fill=(160, 200, 225),
    )
    for wheel_x in (90, 160):
        draw.ellipse([wheel_x - 14, car_top + 38, wheel_x + 14, car_top + 66], fill=(25, 25, 25))
    noisy = np.asarray(image, np.float32) + rng.normal(0, 4, size=(height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def samples():
    """{file name: uint8 [H, W, 3]} of every sample."""
    return {
        "shapes_a.png": shapes(2031, (144, 192)),
        "shapes_b.png": shapes(2032, (160, 160)),
        "street.png": street(),
    }


def write():
    from PIL import Image

    os.makedirs(FOLDER, exist_ok=True)
    for name, pixels in samples().items():
        Image.fromarray(pixels).save(os.path.join(FOLDER, name), optimize=True)
        print(os.path.join(FOLDER, name), os.path.getsize(os.path.join(FOLDER, name)), "bytes")


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    write()
