"""What the tests, the benchmarks and the fuzz target share: ports and process harnesses,
in-process doubles, blob, row and traffic builders, and the bad-input catalogue.

Installed with the package and imported by nothing in `analytics_pipeline` (a test checks the
handler imports without it); it needs no pytest, so benchmarks and `fuzz/` use it as they are.
"""
