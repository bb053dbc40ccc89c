"""The index: its document formats, in-memory snapshots and the local copy under ROOT."""
