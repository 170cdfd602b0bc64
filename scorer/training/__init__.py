"""The training room: `scorer train` and `scorer index` (posts import, labels, fit, evaluation, the model card)."""
