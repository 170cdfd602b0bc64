"""Decoding floor: files vetted and decoded into the learner's input pixels.

Pillow and numpy only: this is what runs in the decoding worker processes.
"""
