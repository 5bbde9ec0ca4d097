"""The bounded load generator lives in preshift.testbed.load (test equipment the demo uses
too); this name stays for the tests and benchmarks that import it from here."""

from preshift.testbed.load import Load, Sample, Summary

__all__ = ["Load", "Sample", "Summary"]
