"""CPU facts the library acts on, read before TensorFlow is imported.

**oneDNN on every x86 CPU.** TensorFlow 2.21's x86 Linux wheels turn their oneDNN CPU kernels on
by default only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX; on others (e.g. an AVX2-only AMD
EPYC) it runs the plain Eigen kernels. Measured on such a 2-core machine (benchmarks/RESULTS.md,
"Session 7"): one training step of the CamVid recipe (ResNet-50, 176x240, batch 8, float32)
took 36 s with Eigen and 3.8 s with oneDNN, and Eigen has no dilated convolution gradient, so
every atrous layer falls back to SpaceToBatchND. ``import deeplab`` therefore sets
``TF_ENABLE_ONEDNN_OPTS=1`` unless the user has set that variable (``0`` keeps Eigen). It acts
only if ``deeplab`` is imported before TensorFlow, which every ``python -m deeplab.*`` entry
point does.

**bfloat16.** oneDNN's bfloat16 kernels need AVX512_BF16 or AMX on x86; without them TensorFlow
has no bfloat16 dilated-convolution gradient at all, and bfloat16 compute is emulated.
:func:`has_native_bfloat16` tells, from ``/proc/cpuinfo``.
"""

import functools
import os

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def enable_onednn_by_default():
    """Sets TF_ENABLE_ONEDNN_OPTS=1 unless the environment already says otherwise."""
    os.environ.setdefault(ONEDNN_VARIABLE, "1")


def _cpu_flags(path="/proc/cpuinfo"):
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=None)
def has_native_bfloat16():
    """True if this CPU computes bfloat16 natively (AVX512_BF16 or AMX); None if unknown
    (no /proc/cpuinfo, e.g. macOS), False otherwise."""
    flags = _cpu_flags()
    if flags is None:
        return None
    return any(flag in flags for flag in _BF16_FLAGS)
