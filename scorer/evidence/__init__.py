"""Evidence floor: what backs a prediction, look-alike past posts (the evidence index) and Grad-CAM."""
