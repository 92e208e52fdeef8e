"""Training: the config and DEFAULTS (config), the stage engine that both stages run through (engine),
stage 1, contrastive or cross-entropy (stage1), stage 2, the linear head on the frozen encoder (stage2),
writing checkpoints (checkpoint; the run folder itself is rccl.run's), one run end to end (runner), the
embedded demo (demo) and multi-process support (distributed). Nothing here imports evaluation."""
