"""Evaluation: the confusion-matrix metrics (``metrics``), multi-scale / flip / tiled inference
(``inference``), evaluating a model or checkpoint on a split (``evaluator``) and colour maps and
prediction panels (``visualization``)."""
