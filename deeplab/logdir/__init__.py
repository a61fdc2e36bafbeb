"""What a run's folder (``--logdir``) holds, read and written by training, evaluation and
export alike: checkpoints, model_config.json and dataset_info.json, and rebuilding a trained
model from them (``checkpoints``), TensorBoard summaries (``summaries``), and the recorded
experiment config and console log (``run_record``: config.json, train.log)."""
