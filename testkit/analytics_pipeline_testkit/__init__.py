"""What the tests, the benchmarks and the fuzz target share: ports and process harnesses,
in-process doubles, blob, row and traffic builders, and the bad-input catalogue.

A distribution of its own (`testkit/`), installed by `make` beside the product; `pip install .`
never carries it (test_packaging checks). It needs no pytest, so benchmarks and `fuzz/` use it
as they are.
"""
