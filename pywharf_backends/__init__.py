"""Storage backends shipped with pywharf, each registered through the ``pywharf.backends``
entry-point group (see ``pywharf_core.storage.registry``).

Each is a storage adapter (``pywharf_core.storage.api``): ``file_system``, ``s3``, and
``memory`` (the reference adapter, for tests and demos). ``github`` implements the service's
``Backend`` interface directly until it is ported.
"""
