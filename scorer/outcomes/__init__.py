"""`scorer outcomes`: launched posts matched back to the creatives scored before them, and the track record."""
