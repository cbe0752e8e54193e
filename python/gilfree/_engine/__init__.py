"""The engine, the front end: everything between the public API and the transports.

Scheduling work onto worker slots (`engine`), where each unit of work is (`backlog`), the units
of work and map jobs (`units`), their sizes (`chunking`), futures (`future`) and map iterators
(`mapping`), what happens when a worker dies or a task times out (`recovery`), the waiting role
that pumps outcomes in the caller's own thread (`waiting`), the collector thread and shutdown
(`lifecycle`), and the interface a transport implements (`transport`).

Imports flow one way: the public modules and `gilfree._transports` use this package, which uses
`gilfree._workers`, `gilfree._wire` and `gilfree._core`, never the reverse (checked by
import-linter in `make lint`).
"""
