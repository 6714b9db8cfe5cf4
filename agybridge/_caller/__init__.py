"""The caller's wing: code that runs on the caller's thread or loop, nowhere else.

``send`` is the one send path (submit once; wait blocking, awaited, as a future or as a
stream; give up). The faces build a command and hand it to ``send``: ``wrap`` (typed
wrappers), ``futures`` (``submit()``), ``handles`` (agent handles), ``context_managers``
(held contexts) and ``streams`` (the consuming end). Nothing here imports the loop's wing
(:mod:`agybridge._loop`); what the send path needs of the loop arrives as a ``LoopDoor``.
"""
