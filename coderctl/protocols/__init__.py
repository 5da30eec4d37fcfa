"""Wire formats written from their specifications: pure functions, no I/O, unit-tested."""
