"""deeplab._cpu: oneDNN on by default (set before TensorFlow loads), bfloat16 detection."""

import sys

import pytest

import harness
from deeplab import _cpu

_PROBE = (
    "import os, deeplab, tensorflow\n"
    "from tensorflow.python.util import _pywrap_util_port as p\n"
    "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], bool(p.IsMklEnabled()))\n"
)


def _probe(env_value):
    """``env_value``: TF_ENABLE_ONEDNN_OPTS in the child (None: unset)."""
    out = harness.run("-c", _PROBE, env={_cpu.ONEDNN_VARIABLE: env_value}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()[-2:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="oneDNN default is x86 Linux")
@pytest.mark.slow
def test_import_deeplab_turns_onednn_on_unless_the_user_chose():
    assert _probe(None) == ["1", "True"]
    assert _probe("0") == ["0", "False"]  # the user's choice wins


def test_has_native_bfloat16_reads_the_cpu_flags(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert _cpu._cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2", "fma"}
    assert _cpu._cpu_flags(str(tmp_path / "absent")) is None
    monkeypatch.setattr(_cpu, "_cpu_flags", lambda: {"avx2", "fma"})
    _cpu.has_native_bfloat16.cache_clear()
    try:
        assert _cpu.has_native_bfloat16() is False
        monkeypatch.setattr(_cpu, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
        _cpu.has_native_bfloat16.cache_clear()
        assert _cpu.has_native_bfloat16() is True
    finally:
        _cpu.has_native_bfloat16.cache_clear()


def test_atrous_conv_keeps_bfloat16_off_the_native_path_without_cpu_support(monkeypatch):
    """Without AVX512_BF16 / AMX, a bfloat16 dilated convolution (and its gradient) runs
    through keras.ops.conv; TensorFlow's oneDNN has no bfloat16 kernel for it there."""
    import numpy as np
    import tensorflow as tf

    from deeplab.model import layers

    monkeypatch.setattr(_cpu, "has_native_bfloat16", lambda: False)
    assert layers._native_dtype("float32") and not layers._native_dtype("bfloat16")
    conv = layers.AtrousConv2D(4, 3, padding="same", dilation_rate=2, dtype="mixed_bfloat16")
    x = tf.constant(np.random.default_rng(0).normal(size=(1, 9, 9, 3)), tf.float32)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(tf.cast(conv(x), tf.float32))
    grads = tape.gradient(y, conv.trainable_variables)
    assert all(g is not None for g in grads)
    monkeypatch.setattr(_cpu, "has_native_bfloat16", lambda: True)
    assert layers._native_dtype("bfloat16")
