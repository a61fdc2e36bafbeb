"""Shared foundations every other subpackage may use: the error types the binaries turn into one
clear line (``errors``) and writes that never leave a half-written file (``atomic_io``). Nothing
here imports TensorFlow or Keras."""
