"""Training: the config (config), checkpoints and the detector loader (checkpoint), the stage-1
contrastive loop (stage1), the stage-2 linear head (stage2), shared step machinery (loop) and
multi-process support (distributed)."""
