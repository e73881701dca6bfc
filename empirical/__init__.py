"""PyTorch experiments: data, models, attacks, training, dataset constructions."""
