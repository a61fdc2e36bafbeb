"""Shared foundations every other subpackage may use: the error types the binaries turn into one
clear line (``errors``), writes that never leave a half-written file (``atomic_io``) and the
image-size arithmetic of training and inference (``geometry``), the environment variables one
deeplab process sets for another (``environment``) and the one object of inference settings
(``inference_options``). ``errors``, ``atomic_io``, ``environment`` and ``inference_options``
import neither TensorFlow nor Keras; ``geometry`` uses ``keras.ops``."""
