"""What travels between processes and how: message kinds (`protocol`), the codec's pickle
fallback and the hooks it is handed (`values`), functions and ``__main__`` as workers share them
(`functions`, `main`), pickling for
`gilfree.Process` (`pickling`), pandas objects the codec rebuilds natively (`reducers`), and the
explanation of a value that cannot be sent (`serialization`).

It uses only `gilfree._core` and `gilfree.errors`.
"""
