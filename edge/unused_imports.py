"""Modules a library of the agent imports but the agent never runs: loaded on first use.

paho-mqtt's client imports ``urllib.request`` at its top for one purpose: reading
an MQTT proxy from the environment, which it does only when PySocks is installed
(the ``[edge]`` extra does not install it). ``urllib.request`` brings http.client,
email and calendar with it: ~1.2 MiB of every Raspberry Pi's memory, on top of all
else the agent loads (BENCHMARKS.md, "Edge agent footprint"). `load_on_first_use`
puts the module in ``sys.modules`` with its code not yet run; the first attribute
it lacks runs the code into it, so paho behaves the same if PySocks is ever
installed; the agent merely never pays for it.

Not `importlib.util.LazyLoader`: on Python 3.11 its module runs its code on any
attribute access, and the ``import`` statement itself reads ``__spec__``.

``edge run`` calls `load_on_first_use` before anything imports paho. The first
use runs the module's code under a lock, but a second thread using the module
while that code runs could find it half filled: paho would touch it from its one
connecting thread only, so the agent never meets that case.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import Final

UNUSED_BY_THE_AGENT: Final = ("urllib.request",)


class _LoadedOnFirstUse(types.ModuleType):
    """A module whose code runs when an attribute it lacks is first asked for."""

    _lock: Final = threading.RLock()

    def __getattr__(self, name: str) -> object:
        with _LoadedOnFirstUse._lock:
            module: types.ModuleType = self
            not_run_yet = isinstance(self, _LoadedOnFirstUse)  # else run by another thread
            spec = module.__spec__
            if not_run_yet and spec is not None and spec.loader is not None:
                module.__class__ = types.ModuleType  # from now on an ordinary module
                spec.loader.exec_module(module)
        return getattr(module, name)


def load_on_first_use(names: tuple[str, ...] = UNUSED_BY_THE_AGENT) -> None:
    """Make each module of ``names`` that is not imported yet run when first used."""
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        module.__class__ = _LoadedOnFirstUse
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:  # `import a.b` binds `a`: its attribute `b` must be this module
            setattr(sys.modules[parent], child, module)
