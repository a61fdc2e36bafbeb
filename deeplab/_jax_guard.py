"""Keeps ``import tensorflow`` / ``import keras`` from importing JAX as a side effect.

Two modules import JAX, when it is installed, inside ``try/except ImportError`` for a feature
this library never uses: TensorFlow 2.21's ``tensorflow.lite.python.util`` (imported eagerly
by ``import tensorflow``; for ``tf.lite.TFLiteConverter.experimental_from_jax``) and Keras
3.15's ``keras.src.callbacks.orbax_checkpoint`` (imported by ``import keras``; it patches
``jax.monitoring`` for Orbax). With JAX installed (our ``test`` extra installs it, to check the
model on the JAX backend) every TensorFlow process of the library would carry JAX's compiled
extension and Python modules: about 100 MiB of resident memory on this machine
(benchmarks/RESULTS.md, issue 7).

The finder below answers "no such module" to ``import jax`` made from exactly those two
modules. On the JAX backend Keras has imported JAX before either runs, so nothing changes
there, and ``import jax`` anywhere else (tests, user code) is untouched. Set
``DEEPLAB_TFLITE_JAX=1`` to keep the libraries' behaviour (e.g. to use
``experimental_from_jax`` in a process that imported ``deeplab`` first).
"""

import os
import sys

_GUARDED_IMPORTERS = ("tensorflow.lite.python.util", "keras.src.callbacks.orbax_checkpoint")


class _RefuseJaxToSideImports:
    """A ``sys.meta_path`` finder that refuses ``jax`` to the modules named above."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):  # pylint: disable=unused-argument
        if fullname != "jax":
            return None
        frame = sys._getframe(1)  # pylint: disable=protected-access
        while frame is not None:
            importer = frame.f_globals.get("__name__")
            if importer in _GUARDED_IMPORTERS:
                raise ModuleNotFoundError(
                    f"jax is not imported by {importer} in deeplab processes "
                    "(see deeplab/_jax_guard.py; DEEPLAB_TFLITE_JAX=1 turns this off)",
                    name="jax",
                )
            frame = frame.f_back
        return None


def install():
    """Adds the finder once, unless JAX is already imported or the user opted out."""
    if os.environ.get("DEEPLAB_TFLITE_JAX", "") not in ("", "0") or "jax" in sys.modules:
        return
    if not any(isinstance(f, _RefuseJaxToSideImports) for f in sys.meta_path):
        sys.meta_path.insert(0, _RefuseJaxToSideImports())
