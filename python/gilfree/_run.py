"""``python -m gilfree run script.py [args...]`` and ``python -m gilfree run -m module
[args...]``: run an unchanged script, or a module as ``python -m module`` would, on gilfree.

Before the script or module runs, the names code reaches the stdlib's process pools through
are rebound to gilfree's classes:

* ``multiprocessing.Pool`` -> ``gilfree.Pool``; ``multiprocessing.pool.Pool(...)`` makes a
  ``gilfree.Pool`` (the class's ``__new__``; the name stays the stdlib's class, which
  multiprocessing's own ``ThreadPool`` subclasses). Contexts' ``get_context(...).Pool()`` go
  through it, so they are covered and keep their start method;
* ``multiprocessing.Process`` -> ``gilfree.Process``;
* ``concurrent.futures.ProcessPoolExecutor`` and ``concurrent.futures.process.
  ProcessPoolExecutor`` -> ``gilfree.ProcessPoolExecutor``;
* multiprocessing's default start method becomes ``"forkserver"``, so the locks, queues and
  semaphores the script makes (``multiprocessing.RLock()``...) can be sent to gilfree's
  workers, which are not forked from the script's process (tqdm's ``process_map`` sends one).
  It is the default, not a choice made: the script's own ``set_start_method`` works as usual.

Then the script runs as ``python script.py args...`` runs it: in a fresh ``__main__`` module
with the attributes the interpreter gives one (an absolute ``__file__``, its loader, the
``builtins`` module), registered as ``__main__`` and as multiprocessing's ``__mp_main__`` to
the end, with ``sys.argv`` and ``sys.path[0]`` set as Python sets them; a directory or zip file
runs its ``__main__.py``, a ``.pyc`` file its bytecode. An uncaught exception prints the
script's own traceback (none of gilfree's frames) through ``sys.excepthook`` and exits with 1;
a script that cannot be opened gets Python's message and status 2.

A module (``-m``; ``-mNAME`` too) runs through the public ``runpy.run_module(name,
run_name="__main__", alter_sys=True)``, set up as ``python -m`` sets it: ``sys.argv`` is
``["-m", args...]`` while the module is found and its file's full path (a package's
``__main__.py``) in ``argv[0]`` while it runs; ``sys.path[0]`` is the current directory as a
full path (neither form touches ``sys.path`` under ``-P`` / ``PYTHONSAFEPATH``, as Python does
not add to it then). It differs from the interpreter's own ``runpy._run_module_as_main`` in two
ways only: the module runs in a fresh ``__main__`` module object (put in ``sys.modules`` for the
run, so pickling by reference works) rather than in the one that started the process; and runpy
reports a module it cannot find or run with a plain ``ImportError`` (its private ``_Error`` is
what tells ``python -m`` to print one line), so an ``ImportError`` whose traceback holds only
runpy's frames is reported as ``python -m`` does ("No module named ...", a package without
``__main__``; one line, exit 1) while one raised by the module's own code keeps its traceback.
``SystemExit`` codes come back as the exit status, as for a script (``run -m pytest`` returns
pytest's).

The rebinding is also made, before the script runs, in gilfree's template process and in any
worker that runs the script itself (``_main.before_main``), so a pool the script's top level
creates there is gilfree's too, and an unguarded one is refused as spawn refuses it.

Where this stops working: names bound before the rebinding (none, for a plain script; but a
module that did ``from multiprocessing import Pool`` at import time and was imported by
``sitecustomize`` keeps the stdlib's), subclasses of the stdlib's classes (they stay the
stdlib's, ``ThreadPool`` included), ``isinstance(pool, multiprocessing.pool.Pool)``,
contexts' ``Process`` classes (``get_context().Process``, ``Manager`` servers), and
code that reads the stdlib pools' private attributes. Workers start from gilfree's zygote, so
they do not inherit the parent's memory: the script's functions reach them as multiprocessing's
spawn sends them (see ``gilfree._wire.main``), but state kept elsewhere (another module's
globals set by the script) is not seen; a pool made from ``get_context("fork")`` still forks.
"""

from __future__ import annotations

import builtins
import importlib.abc
import importlib.machinery
import os
import runpy
import sys
import types
import zipfile
from collections.abc import Callable
from typing import Any

from gilfree._wire import main as _main

#: ``install``, as ``_main.before_main`` names it.
INSTALL = "gilfree._run:install"


def install() -> None:
    """Rebinds the stdlib's pool and process names to gilfree's (see the module docstring)."""
    import concurrent.futures
    import concurrent.futures.process
    import multiprocessing
    import multiprocessing.pool

    import gilfree
    import gilfree.multiprocessing
    import gilfree.process

    if INSTALL not in _main.before_main:  # the template and workers rebind before the script
        _main.before_main.append(INSTALL)
    # Rebinding the stdlib's classes to gilfree's drop-ins, which typeshed cannot know of.
    # Workers start from gilfree's template, not by forking this process, so locks, queues and
    # semaphores made here must be the kind another process can open by name (as forkserver's
    # are): tqdm's process_map hands its workers an mp.RLock() as initargs. That becomes the
    # default start method, not a set one: a script may still set its own.
    default = multiprocessing.context._default_context  # noqa: SLF001 - see above
    if gilfree.process.stdlib_default is None:
        gilfree.process.stdlib_default = default._default_context  # type: ignore[attr-defined]  # noqa: SLF001
    default._default_context = default.get_context("forkserver")  # type: ignore[attr-defined]  # noqa: SLF001
    if default._actual_context is not None:  # type: ignore[attr-defined]  # noqa: SLF001 - in use
        multiprocessing.set_start_method("forkserver", force=True)
    multiprocessing.Pool = gilfree.Pool  # type: ignore[assignment]
    # multiprocessing.pool's own code (ThreadPool, a subclass) reaches the class by its name
    # there: the name stays, and making the class itself makes a gilfree.Pool instead.
    multiprocessing.pool.Pool.__new__ = _new_pool  # type: ignore[method-assign]
    multiprocessing.Process = gilfree.Process  # type: ignore[misc]
    multiprocessing.set_start_method = gilfree.multiprocessing.set_start_method
    concurrent.futures.ProcessPoolExecutor = gilfree.ProcessPoolExecutor  # type: ignore[misc, assignment]
    concurrent.futures.process.ProcessPoolExecutor = gilfree.ProcessPoolExecutor  # type: ignore[misc, assignment]


def _new_pool(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
    """``multiprocessing.pool.Pool.__new__`` once installed: ``Pool(...)``, as contexts' and
    ``from multiprocessing.pool import Pool`` make it, is a ``gilfree.Pool``; its subclasses
    (``ThreadPool``) stay the stdlib's."""
    import multiprocessing.pool

    if cls is multiprocessing.pool.Pool:
        import gilfree

        return gilfree.Pool(*args, **kwargs)
    return object.__new__(cls)


USAGE = """\
usage: python -m gilfree run script.py [args...]
       python -m gilfree run -m module [args...]
Runs script.py, or the module as python -m does, with multiprocessing.Pool,
multiprocessing.Process and concurrent.futures.ProcessPoolExecutor replaced by gilfree's."""


def main(argv: list[str]) -> int:
    """Runs ``argv[0]`` (or the module after ``-m``) with the rest of ``argv`` as its
    arguments; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0].startswith("-m"):
        module = argv[0][2:] or (argv[1] if len(argv) > 1 else "")
        if not module:
            print("python -m gilfree run: -m needs a module name", file=sys.stderr)
            print(USAGE)
            return 2
        arguments = argv[1:] if argv[0] != "-m" else argv[2:]
        return _run_module(module, arguments)
    return _run_script(argv[0], argv)


def _run_script(script: str, argv: list[str]) -> int:
    """``python script.py args...`` (``argv``), or a directory or zip file holding a
    ``__main__.py`` (see the module docstring)."""
    path = os.path.abspath(script)  # a script's __file__ is absolute, as Python makes it
    if os.path.isdir(path) or zipfile.is_zipfile(path):
        spec = importlib.machinery.PathFinder.find_spec("__main__", [path])
        if spec is None or spec.loader is None:
            print(f"{sys.executable}: can't find '__main__' module in {path!r}", file=sys.stderr)
            return 1
        code = spec.loader.get_code("__main__")  # type: ignore[attr-defined]
        module = _main_module(spec.loader, spec.origin)
        module.__spec__, module.__package__, module.__cached__ = spec, "", spec.cached  # type: ignore[attr-defined]
        folder = path
    else:
        loader: importlib.abc.FileLoader
        try:
            if path.endswith(".pyc"):
                loader = importlib.machinery.SourcelessFileLoader("__main__", path)
                code = loader.get_code("__main__")
            else:
                loader = importlib.machinery.SourceFileLoader("__main__", path)
                # Compiled here, not by the loader, which would cache the script's bytecode.
                code = compile(loader.get_data(path), path, "exec", dont_inherit=True)
        except OSError as error:
            print(f"{sys.executable}: can't open file {path!r}: {error}", file=sys.stderr)
            return 2
        except (SyntaxError, ValueError) as error:  # as Python reports it: no traceback
            sys.excepthook(type(error), error.with_traceback(None), None)
            return 1
        module = _main_module(loader, path)
        folder = os.path.dirname(os.path.realpath(path))  # Python follows a link to the script
    install()
    sys.argv[:] = argv
    _set_path0(folder)
    # The script's module is the process's __main__ to its end, and multiprocessing's alias
    # __mp_main__ (which it set to gilfree's own __main__ when first imported) is it too:
    # objects of the script's classes come back from workers as ``__mp_main__.Name``.
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    assert code is not None
    return _execute(code, module)


def _main_module(loader: Any, path: str | None) -> types.ModuleType:
    """A fresh ``__main__`` module for the script at ``path``, as the interpreter makes one."""
    module = types.ModuleType("__main__")
    module.__file__, module.__loader__ = path, loader
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    module.__cached__ = None  # type: ignore[attr-defined]
    return module


def _execute(code: types.CodeType, module: types.ModuleType) -> int:
    """Runs the script's ``code`` in ``module``; returns its exit status. An uncaught exception
    is reported as the interpreter reports it (``sys.excepthook``, from the script's frame on:
    gilfree's and runpy's frames are left out) with status 1."""
    try:
        exec(code, module.__dict__)  # noqa: S102 - running the user's script is the point
    except SystemExit as exit_request:
        return _status(exit_request)
    except Exception as error:  # noqa: BLE001 - reported as the interpreter would
        _report(error, code)
        return 1
    except KeyboardInterrupt as interrupt:
        # Reported here, then left to the interpreter, which exits as Python does after an
        # unhandled Ctrl-C (killed by SIGINT, once the exit handlers have run): its own report
        # would show gilfree's frames, so its hook prints nothing, this once.
        _report(interrupt, code)
        hook = sys.excepthook

        def reported_already(*_exc_info: object) -> None:
            sys.excepthook = hook

        sys.excepthook = reported_already
        raise
    return 0


def _report(error: BaseException, code: types.CodeType) -> None:
    """Prints ``error`` as the interpreter would (``sys.excepthook``), from the script's frame
    on: gilfree's and runpy's frames are left out."""
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_frame.f_code is not code:
        traceback = traceback.tb_next
    if traceback is not None:  # the default hook prints the exception's own traceback
        error.__traceback__ = traceback
    sys.excepthook(type(error), error, error.__traceback__)


def _run_module(module: str, arguments: list[str]) -> int:
    """``python -m module arguments...`` (see the module docstring)."""
    install()
    sys.argv[:] = ["-m", *arguments]  # argv[0] is "-m" while the module is found, as in Python
    _set_path0(os.getcwd())
    try:
        return _exit_status(runpy.run_module, module, run_name="__main__", alter_sys=True)
    except ImportError as error:
        if not _raised_by_runpy(error):
            raise
        print(f"python -m gilfree run: {error}", file=sys.stderr)
        return 1


def _set_path0(entry: str) -> None:
    """Puts ``entry`` where Python put the directory of ``python -m gilfree`` (nothing under
    ``-P``, where Python adds none)."""
    if not sys.flags.safe_path:
        sys.path[0] = entry


def _raised_by_runpy(error: ImportError) -> bool:
    """True when runpy itself raised ``error`` while finding the module (its traceback, after
    this module's frames, holds only runpy's; runpy is frozen, so its frames' file name is its
    code's, not ``runpy.__file__``), not the module's code or an import it ran."""
    traceback = error.__traceback__
    filenames: list[str] = []
    while traceback is not None:
        filenames.append(traceback.tb_frame.f_code.co_filename)
        traceback = traceback.tb_next
    ours = (_raised_by_runpy.__code__.co_filename, runpy.run_module.__code__.co_filename)
    return bool(filenames) and all(name in ours for name in filenames)


def _exit_status(run: Callable[..., object], *args: Any, **kwargs: Any) -> int:
    """Calls ``run`` and turns a ``SystemExit`` into the exit status, as the interpreter does."""
    try:
        run(*args, **kwargs)
    except SystemExit as exit_request:
        return _status(exit_request)
    return 0


def _status(exit_request: SystemExit) -> int:
    """The exit status the interpreter gives for ``exit_request`` (printing a message code)."""
    code = exit_request.code
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1
