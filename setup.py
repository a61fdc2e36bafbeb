"""Packaging for the DeepLabv3 TensorFlow 2 / Keras 3 reimplementation.

TensorFlow itself is an extra so that the CPU build (``tensorflow-cpu``) and the
GPU build (``tensorflow[and-cuda]``) can both be chosen without pip pulling the
other one in:

    pip install -e ".[cpu]"         # this machine: CPU only
    pip install -e ".[gpu]"         # a CUDA host
    pip install -e ".[cpu,test]"    # plus the test suite's needs
"""

from setuptools import find_packages
from setuptools import setup

TF_RANGE = ">=2.16,<2.23"

setup(
    name="deeplab-tf2",
    version="0.1.0",
    description="DeepLabv3 (Chen et al., 2017) for TensorFlow 2 / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # third_party/ (label tables with their sources and licences) ships inside the package as
    # deeplab/third_party, where deeplab.data.datasets_info looks when the checkout's folder is
    # absent.
    packages=find_packages(include=["deeplab", "deeplab.*"]) + ["deeplab.third_party"],
    package_dir={"deeplab.third_party": "third_party"},
    package_data={
        "deeplab.third_party": ["*.csv", "README.md"],
        # The demo page of `python -m deeplab.serve` (plain files, no CDN: it runs offline).
        "deeplab.export": [
            "demo_page/*.html",
            "demo_page/*.css",
            "demo_page/*.js",
            "demo_page/*.svg",
            "demo_page/samples/*.png",
        ],
    },
    install_requires=[
        "keras>=3.5,<4",
        "numpy>=1.26,<3",
        "absl-py>=1.4",
        "tensorflow-datasets>=4.9",
        "matplotlib>=3.7",
        "pillow>=10.0",
        "scipy>=1.10",
        "h5py>=3.9",
    ],
    extras_require={
        # TensorBoard is how runs are watched (README, "Watch a run"); tensorflow-cpu does not
        # pull it in.
        "cpu": [f"tensorflow-cpu{TF_RANGE}", f"tensorboard{TF_RANGE}"],
        "gpu": [f"tensorflow[and-cuda]{TF_RANGE}", f"tensorboard{TF_RANGE}"],
        "coco": ["pycocotools>=2.0.7"],
        "test": [
            "pytest>=7.4",
            "pytest-xdist==3.8.0",
            "jax[cpu]>=0.4.30",
            "pycocotools>=2.0.7",
            "psutil>=5.9",
            "ruff==0.17.6",
            # tests/test_serve_browser.py drives the demo page in Debian's chromium (not
            # Playwright's own browser download); it skips with one line when either is missing.
            "playwright>=1.40",
        ],
    },
)
