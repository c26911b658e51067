"""Benchmarks (``ringfence bench``): the embedded platform end to end over HTTP, and the same
keyed windowed count measured on Ringfence's engine, plain Python and a peer stream library."""
