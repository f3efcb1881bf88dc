"""The ``faceoff`` command's sub-commands, one module each.

Each module has ``register(sub, loud)``, which adds its sub-parser (``loud`` is the shared
``-v/--verbose`` parent of the in-process commands) and sets ``run`` (and ``traced`` for the
client commands) as its defaults, and ``run(args) -> int``. Heavy libraries are imported inside
``run``, so building the parser stays cheap.
"""
