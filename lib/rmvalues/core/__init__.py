"""Core layer: paths, atomic files, provenance (run records, one timer), the parameter schema mechanism,
stage hand-offs and the error types. Imports nothing else of the library."""
