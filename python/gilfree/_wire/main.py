"""The parent's ``__main__`` in workers, shared as multiprocessing shares it.

Workers not forked from the parent (zygote, spawn) run the parent's main script as
``__mp_main__`` and install it as their ``__main__``, as multiprocessing's spawn does; the zygote
does it once and its forked workers inherit it. A forked worker has the parent's own
``__main__``. Either way that module is *the worker's main namespace*, and functions and classes
of the parent's ``__main__`` arrive in it:

* by reference when the worker's main module has an object of the same qualified name (a
  function or class defined at the top level of the script): the worker uses its own, so module
  state (an initializer's globals, a cache filled by one task and read by the next) is shared
  exactly as with the stdlib;
* by value otherwise (lambdas, closures, nested functions, anything from a notebook, a REPL,
  ``python -c`` or stdin, names rebound since): the function is rebuilt with the worker's main
  namespace as its globals; of the globals it refers to, names the namespace lacks are added and
  names it has are kept. So every by-value function from one parent shares one namespace per
  worker, and the initializer pattern works in a notebook too. An object sent again is the
  copy made the first time; a definition new to the worker (a name redefined in the parent)
  is used as sent and replaces the previous one under its name (``prefer_main``).

The parent side is ``MainPickler`` (in ``gilfree._wire.functions``); the functions here are what its
pickles call in the worker.
"""

from __future__ import annotations

import builtins
import sys
import types
from typing import Any

#: True while this process runs the parent's main script: starting workers then is the
#: unguarded-script mistake (no ``if __name__ == "__main__":``), refused as multiprocessing does.
importing = False
#: True in gilfree's own processes (template, workers, ``gilfree.Process`` children): they
#: start a template process only when asked to, never ahead of time (see ``zygote.prestart``).
in_gilfree_process = False

_UNGUARDED = """
        An attempt has been made to start a gilfree worker before this process has finished
        importing the main script (gilfree imports it once, in its template process, as
        multiprocessing's spawn and forkserver do in every worker).

        The script is missing the idiom

            if __name__ == '__main__':
                ...

        around the code that creates the pool."""


#: Functions (``"module:name"``) to call before the parent's main script runs elsewhere (in the
#: template process, or a worker that runs it itself): ``python -m gilfree run`` adds its
#: rebinding of the stdlib's pools, so the script sees there the classes it sees in the parent.
before_main: list[str] = []


def run_before_main(names: list[str] | tuple[str, ...]) -> None:
    """Calls each ``"module:name"`` function of ``names``."""
    import importlib

    for name in names:
        module, _, function = name.partition(":")
        getattr(importlib.import_module(module), function)()


def check_not_importing() -> None:
    """Raises RuntimeError if this process is importing the parent's main script."""
    if importing:
        raise RuntimeError(_UNGUARDED)


def parent_main_path() -> str | None:
    """The path of this process's main script, for workers that do not inherit it; None when
    there is none to run again (a notebook, a REPL, ``python -c``, ``python -m package``, a
    script read from stdin, whose ``__file__`` is ``"<stdin>"``), as multiprocessing decides."""
    import os

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.endswith("__main__"):
        return None  # ``python -m package``: the package's __main__ must not run again
    path: str | None = getattr(main, "__file__", None)
    if spec is not None or not path or os.path.basename(path).startswith("ipython"):
        return None
    if path.startswith("<") and path.endswith(">"):  # "<stdin>": no file to run again
        return None
    return os.path.abspath(path)


def loaded(path: str) -> bool:
    """Whether this process already ran the main script ``path`` (as its template did)."""
    return getattr(sys.modules.get("__mp_main__"), "__file__", None) == path


def import_main(path: str) -> None:
    """Runs the parent's main script as ``__mp_main__`` and installs it as ``__main__``.

    The script runs in the module's own dictionary (multiprocessing runs it in a temporary one
    and copies it), so the functions it defines and the module are one namespace. On error the
    previous main module is put back and the error raised.
    """
    global importing
    import runpy

    previous = sys.modules.get("__main__"), sys.modules.get("__mp_main__")
    main = types.ModuleType("__mp_main__")
    main.__file__ = path
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main
    importing = True
    try:
        code = _read_code(path)
        if code is None:  # a directory or zip file with a __main__.py: runpy knows those
            main.__dict__.update(runpy.run_path(path, run_name="__mp_main__"))
        else:
            main.__dict__.update(__builtins__=builtins, __cached__=None, __package__=None)
            exec(code, main.__dict__)  # noqa: S102 - the parent's own script, as spawn runs it
    except BaseException:
        _restore(previous)
        raise
    finally:
        importing = False


def _read_code(path: str) -> types.CodeType | None:
    import io
    import os

    if not os.path.isfile(path) or path.endswith((".zip", ".pyz")):
        return None
    with io.open_code(path) as source:
        return compile(source.read(), path, "exec")


def _restore(previous: tuple[Any, Any]) -> None:
    for name, module in zip(("__main__", "__mp_main__"), previous):
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def install_empty_main() -> None:
    """Gives a worker without the parent's main script a fresh, empty main namespace (instead
    of the launcher's ``python -c`` module), for by-value functions to share."""
    main = types.ModuleType("__mp_main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main


def namespace() -> dict[str, Any]:
    """The worker's main namespace."""
    return sys.modules["__main__"].__dict__


# -- called by MainPickler's pickles in the worker ------------------------------------------------


def from_main(qualname: str) -> Any:
    """The worker's own ``__main__.<qualname>`` (the parent knew the worker has it)."""
    found: Any = sys.modules["__main__"]
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


#: What ``prefer_main`` used for each qualified name sent by value: ``(token, object)``, the
#: token naming the parent's object (``MainPickler`` gives each object its own).
_by_value: dict[str, tuple[str, Any]] = {}


def prefer_main(qualname: str, fallback: Any, token: str) -> Any:
    """The worker's own ``__main__.<qualname>`` if it has one by that qualified name, else the
    object sent by value: the one made when the same parent object (``token``) came before,
    else ``fallback``, which a top-level name then also binds. A name redefined in the parent
    is a new object there: its new definition is used here, and replaces the previous one
    under that name (a name that the worker's main script bound is left alone)."""
    names = namespace()
    top = qualname.partition(".")[0]
    previous = _by_value.get(top)
    ours = previous is not None and names.get(top) is previous[1]  # bound by a previous send
    if not ours:
        found: Any = sys.modules["__main__"]
        for part in qualname.split("."):
            found = getattr(found, part, None)
            if found is None:
                break
        if found is not None and getattr(found, "__qualname__", None) == qualname:
            return found
    sent = _by_value.get(qualname)
    if sent is not None and sent[0] == token:
        return sent[1]
    _by_value[qualname] = (token, fallback)
    if "." not in qualname and (ours or qualname not in names):
        names[qualname] = fallback
    return fallback


def make_function(
    code: types.CodeType, name: str, defaults: Any, closure: tuple[Any, ...] | None
) -> types.FunctionType:
    """A by-value function of the parent's ``__main__``, with the worker's main namespace as
    its globals (its state follows: ``set_function_state``)."""
    return types.FunctionType(code, namespace(), name, defaults, closure)


def set_function_state(
    function: types.FunctionType, state: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """cloudpickle's state setter, except that the globals the function refers to are merged
    into the shared namespace without replacing names it already has."""
    from cloudpickle.cloudpickle import _function_setstate

    attributes, slots = state
    shared = function.__globals__
    for name, value in slots["__globals__"].items():
        shared.setdefault(name, value)
    builtins = shared.get("__builtins__")
    _function_setstate(function, (attributes, {**slots, "__globals__": {}}))
    if builtins is not None:
        shared["__builtins__"] = builtins  # cloudpickle puts its own module's dict there
