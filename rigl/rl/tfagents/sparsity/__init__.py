"""A run's sparse method as one object (`spec.SparseMethod`)."""
