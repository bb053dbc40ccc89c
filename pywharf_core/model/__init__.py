"""The data pywharf is about: names, file records, core metadata. Imports nothing else of pywharf."""
