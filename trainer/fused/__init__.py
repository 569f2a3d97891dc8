"""Horizontal fusion: many trials of one model shape trained at once as one fused model.

- `layers`: fused layers and `fuse(models)`, with per-trial state dicts in the unfused format;
- `optim`: per-trial SGD/AdamW over the fused parameters;
- `loop`: `train_group`, the training loop of a group, each trial with its own fate;
- `grouping`: which trials can share a group (`fuse_key`).
See docs/trainer.md, "Fused training".
"""
