"""The training room: `scorer train` (posts import, labels, evaluation, the model card)."""
