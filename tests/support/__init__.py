"""What the tests share beyond fixtures (those stay in ``conftest.py``):

* ``tasks``: the task functions, classes and gates workers run, importable by reference under
  gilfree and the stdlib alike;
* ``values``: the values users send, for the type matrix (arrays, frames, objects whose ``==``,
  ``bool``, ``len`` or ``hash`` raise, builtins);
* ``frames``: pandas and Arrow helpers (where a received buffer lies, a real group-by);
* ``processes``: scripts in a child interpreter, shutdowns that cannot hang the session, file
  gates, and the checks for leaked processes and shared memory;
* ``limits``: the time limits and sizes, each defined once;
* ``codec_tags``: the codec tags tests look for in messages.
"""
