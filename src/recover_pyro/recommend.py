"""``python -m recover_pyro.recommend``: the ``recover-recommend`` command (:mod:`recover_pyro.cli.recommend`).

The library code lives in :mod:`recover_pyro.wetlab`; ``from recover_pyro.recommend import recommend`` (the
old path) still works. Importing this module makes Python bind ``recover_pyro.recommend`` to the module,
over the root export of the function, so the module is callable as the function: ``recover_pyro.recommend(...)``
fits and proposes a plate whichever of the two the name holds. The command line (and Hydra) is imported only
when the module runs as a script.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from recover_pyro.wetlab import Recommendation, recommend

__all__ = ["Recommendation", "recommend"]
# inspect.signature and help() on the module follow this to the function.
__wrapped__ = recommend


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`recover_pyro.wetlab.recommend`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Recommendation:
        return recommend(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    from recover_pyro.cli.recommend import main

    main()
