"""The worker processes: how they start (`launch`: the zygote, fork or spawn), the template
process they fork from (`zygote`), the loop each runs (`worker`), and the child that runs a
`gilfree.Process` (`process_child`).

It uses `gilfree._wire` and `gilfree._core`; the engine above uses it.
"""
