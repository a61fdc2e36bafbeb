"""Serving: SavedModel signatures and in-process segmenters (``serving``) and TFLite conversion,
int8 quantization and the TFLite segmenter (``tflite``)."""
