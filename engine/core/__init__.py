"""The kind contract every job kind implements, its inputs, progress and the error codes. Kinds import this (and
the shared libraries beside it), never the registry and never another kind."""
