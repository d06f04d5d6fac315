"""The torch side: backbones, heads, domains, augmentation, trainers, metrics."""
