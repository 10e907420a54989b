"""The local engine: a LLaVA-family model run in this process (or a child of it) with transformers.

``backend.LocalBackend`` is the engine; the other modules are its parts (loading, batching, the KV
reuse between turns, streaming). torch and transformers are imported lazily, inside the functions that
need them: importing this package (or ``worker``, which the web server's process uses) loads neither.
"""
