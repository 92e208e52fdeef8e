"""Training: the config, its schema and DEFAULTS (config, schema), the stage loop both stages run through
and its hooks (engine, hooks: non-finite stop, checkpoint saver, epoch log), device and AMP (runtime), the
optimiser and schedule (optim), stage 1, contrastive or cross-entropy (stage1), stage 2, the linear head on
the frozen encoder (stage2), what a resume may change (resume), one run end to end (runner), the embedded
demo (demo) and multi-process support (distributed). The checkpoint format is rccl.checkpoint's, the run
folder rccl.run's. Nothing here imports evaluation."""
