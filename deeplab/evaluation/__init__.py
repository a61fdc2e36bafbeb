"""Evaluation: the confusion-matrix metrics (``metrics``), multi-scale / flip / tiled inference
(``inference``), evaluating a model or checkpoint on a split (``evaluator``), evaluating each new
checkpoint of a run (``continuous``), colour maps and prediction panels (``visualization``),
the visualization and evaluation-server files of a split (``vis_export``) and the paper's
figures (``figures``)."""
