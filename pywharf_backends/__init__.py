"""Storage backends shipped with pywharf, each registered through the ``pywharf.backends``
entry-point group (see ``pywharf_core.storage.registry``)."""
