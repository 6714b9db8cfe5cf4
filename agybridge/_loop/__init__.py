"""The loop's wing: code that runs on the runtime thread and in the workers it starts.

``thread`` owns the thread and its loop; ``dispatcher`` runs each drained command as its own
task and accounts its outcome; ``agents`` keeps the agents and their chat turns; ``streams``
is the producing end of a stream; ``callbacks`` runs the host callbacks agent code makes
(``dispatch_tool``, ``dispatch_hook``, ``dispatch_policy_confirm``) and ``containment`` keeps
their failures from escaping; ``workers`` is the daemon pool for sync callbacks; ``lifecycle``
builds the wing's parts and stops them (shutdown, death). Nothing here imports the caller's
wing (:mod:`agybridge._caller`); the two meet through callables the facade hands in.
"""
