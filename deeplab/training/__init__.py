"""Training: the losses (``losses``), optimizer and schedule (``optimizers``, ``schedules``),
weight decay (``weight_decay``), gradient recomputation (``recompute``), strategies
(``distribute``), checkpoints (``checkpoints``), summaries and the run record (``summaries``,
``run_record``) and the training loop. Add a loss in ``losses``."""
