"""One package per job kind: its params and report, run, checks, estimate, summary, HTML template and helpers.
A kind imports engine.core and the shared libraries, never another kind and never the registry."""
