"""Evolution: the CA genome, its mapping to genes, and selection. Pure: no I/O, no clocks."""
