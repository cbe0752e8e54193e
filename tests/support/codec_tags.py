"""The codec's value tags the tests look for in encoded messages (the wire format is described
in ``crates/gilfree-core/src/codec.rs``): a message starts with MAGIC, then the top value's tag."""

MAGIC = 0xC1
PICKLE = 0x0F
NDARRAY = 0x17
REDUCED = 0x18
