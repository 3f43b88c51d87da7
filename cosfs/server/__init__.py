"""A local COS-compatible server for tests, demos and offline development.

It shares no code with the client package ``cosfs.cos``, so that a misreading of the
COS API cannot hide on both sides. Layout: ``cli`` (command line) -> ``server`` (the
listening socket) -> ``handler`` (HTTP, one ``Exchange`` per request: routing, faults,
``auth``, ``bodies``) -> ``object_ops`` / ``bucket_ops`` / ``multipart_ops`` -> ``store``
(SQLite metadata + ``blobs`` files). Pure helpers: ``routing``, ``ranges``, ``listing``,
``xmlio``, ``cos_signature``, ``sigv4``.
"""
