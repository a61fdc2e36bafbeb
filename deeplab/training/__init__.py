"""Training. ``trainer.train(config)`` runs one experiment: it sets the run up and drives the
synchronous loop (``loop``) or the parameter-server loop (``ps_loop``) over the one training
step (``step``: loss, backward pass, weight decay, update), sharing the per-step bookkeeping
(``bookkeeping``: non-finite stop, logs, checkpoints) and image summaries
(``image_summaries``). Around it: the losses (``losses``), optimizer and schedule
(``optimizers``, ``schedules``), weight decay (``weight_decay``), gradient recomputation
(``recompute``), strategies and the tasks of a cluster (``distribute``; local clusters are
started by ``deeplab.orchestration.cluster``). What a run writes into its folder is
``deeplab.logdir``'s. Add a loss in ``losses`` and select it in
``step.replica_loss``."""
