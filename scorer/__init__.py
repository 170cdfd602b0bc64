"""Rank social-media creatives by predicted engagement with a fastai vision learner."""

__version__ = "0.1.0"
