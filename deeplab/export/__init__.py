"""Models in and out of the project: SavedModel signatures and in-process segmenters
(``serving``), SavedModel export of a checkpoint (``saved_model``), TFLite conversion, int8
quantization and the TFLite segmenter (``tflite``), prediction on image files (``predictor``),
and the authors' released models (TFLite / TF1 checkpoints) imported as ours (``official``)."""
