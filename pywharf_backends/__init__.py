"""Storage backends shipped with pywharf, each registered through the ``pywharf.backends``
entry-point group (see ``pywharf_core.storage.registry``).

Each is a storage adapter (``pywharf_core.storage.api``): ``file_system``, ``s3``, ``github``
(releases as blobs, release bodies and branch files as documents), and ``memory`` (the
reference adapter, for tests and demos). Every policy is the core's
(``pywharf_core.service.package_store``).
"""
