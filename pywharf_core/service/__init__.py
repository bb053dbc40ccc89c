"""Use cases: package repositories, uploads, index sync, the server's repository set."""
