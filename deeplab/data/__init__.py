"""Datasets, from raw files to training batches. Owns the record schema and ``dataset.json``
(``tfrecord``), the converters and raw dataset layouts (``convert``, ``raw_datasets``), the one
image reader (``images``), label tables and dataset metadata (``datasets_info``), TFDS sources
(``tfds_source``), the paper's augmentation (``augment``), the tf.data pipeline
(``input_pipeline``) and synthetic datasets (``synthetic``). Add a dataset here: a raw layout in
``raw_datasets`` (plus its label table in ``datasets_info``) and a script in ``datasets/``."""
