"""Model floor: the exported learner file, loaded and trusted (scoring's only fastai import), its runtimes and pins."""
