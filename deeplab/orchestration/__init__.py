"""Orchestration: the top layer, which runs the binaries as processes rather than calling the
library in-process. ``plan`` turns the paper's table rows into experiment configs (a flagfile's
config, read by the binary, with the row's overrides applied) and the training runs the rows
share; ``reproduction`` runs them (training in a subprocess, ``python -m deeplab.train`` or a
local cluster), evaluates each row and writes the side-by-side tables and experiments/README.md's
rows; ``cluster`` starts a TensorFlow cluster as local processes (``python -m
deeplab.launch_local``). Nothing below imports it; it reads no flags."""
