"""Shared foundations every other subpackage may use: the error types the binaries turn into one
clear line (``errors``), writes that never leave a half-written file (``atomic_io``) and the
image-size arithmetic of training and inference (``geometry``) and the environment variables
one deeplab process sets for another (``environment``). ``errors``, ``atomic_io`` and
``environment`` import neither TensorFlow nor Keras; ``geometry`` uses ``keras.ops``."""
