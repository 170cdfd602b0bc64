"""Decoding floor: files vetted and decoded into the learner's input pixels.

Pillow and numpy only, and PyAV once a video arrives: this is what runs in the decoding worker processes.
"""
