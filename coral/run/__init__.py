"""A run: the evolution pipeline, its lifecycle (start, resume, validate), events and checkpoints."""
