"""The scoring room: `scorer score`, and the engine every room shares.

vet, decode and the decode pool; the learner, runtimes and model; integrity of the model file.
"""

import sys

# torchvision imports Triton, a GPU kernel compiler, only to register kernels for torch.compile, which
# the scorer never uses: its library alone is some 75 MiB of resident memory in every process that
# loads a learner. Marked absent, as on an install without it, unless something imported it already.
sys.modules.setdefault("triton", None)  # type: ignore[arg-type]
