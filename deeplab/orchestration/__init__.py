"""Orchestration: the top layer, which runs the binaries as processes rather than calling the
library in-process. ``reproduction`` plans and runs the paper's tables: each row's experiment
config (a flagfile's config, read by the binary, with the row's overrides applied), the training
runs the rows share, training in a subprocess (``python -m deeplab.train``, or a local cluster),
evaluation, and the side-by-side tables; ``cluster`` starts a TensorFlow cluster as local
processes (``python -m deeplab.launch_local``). Nothing below imports it; it reads no flags."""
