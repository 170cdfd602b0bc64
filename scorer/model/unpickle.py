"""A pickle module for torch.load that lets a learner load without its notebook's labelling functions."""

from __future__ import annotations

import pickle
from typing import Any

from scorer.errors import ModelError


class _MissingGlobal:
    """Stands in for a function or class pickled with the learner that cannot be imported here."""

    missing_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ModelError(f"{self.missing_name} is needed but cannot be imported: install the module that defines it")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ModelError(f"{self.missing_name} is needed but cannot be imported: install the module that defines it")


class TolerantPickle:
    """Passed to torch.load as `pickle_module`; `missing_names()` says what was stood in for.

    Notebooks export learners that reference their own labelling functions (get_y,
    label_func). Inference never calls them, so a stand-in lets the learner load.
    """

    __name__ = "pickle"
    load = staticmethod(pickle.load)
    loads = staticmethod(pickle.loads)

    def __init__(self) -> None:
        missing: list[str] = []
        self._missing = missing

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                try:
                    return super().find_class(module, name)
                except (ImportError, AttributeError):
                    qualname = f"{module}.{name}"
                    missing.append(qualname)
                    return type(name, (_MissingGlobal,), {"missing_name": qualname, "__module__": module})

        self.Unpickler = Unpickler

    def missing_names(self) -> list[str]:
        """The globals that could not be imported, sorted."""
        return sorted(set(self._missing))
