"""The transports behind the front end (see ``gilfree._engine.transport``): ``process``, worker
processes on shared-memory rings, and ``thread``, threads of this process."""
