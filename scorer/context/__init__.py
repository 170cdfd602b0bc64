"""Context beside the image: posting time and caption, in training (signals, the combined model) and in scoring.

    signals.py  the small documented signal list, from past posts and from a planned post
    model.py     the combined model (image embedding + context): fit, write, read, predict; plain JSON, no pickle
    plan.py      a creative's planned time and caption: sidecar <name>.txt / <name>.json, or a plan.csv row
    advice.py    the Engagement score at the planned time and the best slots of the coming week
"""
