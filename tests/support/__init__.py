"""What the suites share, imported by tests and conftest modules alike (fixtures stay in
the conftest modules): ``core`` (limits, clock, memory service), ``deferreds``, ``stores``
(opening each backend), ``doubles``, ``http`` and ``stomp`` (in-memory clients), ``serve``
(qgate in a subprocess), ``certs``, ``schemas`` and ``strategies`` (Avro test data)."""
