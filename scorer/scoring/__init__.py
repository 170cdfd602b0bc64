"""The scoring room: `scorer score`, and the engine every room shares.

vet, decode and the decode pool; the learner, runtimes and model; integrity of the model file.
"""
