"""What travels between processes and how: message kinds and the codec's Python side
(`protocol`), functions and ``__main__`` as workers share them (`functions`, `main`), pickling for
`gilfree.Process` (`pickling`), pandas objects the codec rebuilds natively (`reducers`), and the
explanation of a value that cannot be sent (`serialization`).

It uses only `gilfree._core` and `gilfree.errors`.
"""
