"""The Preshift exporter, run with `preshift exporter` (see docs/metrics.md, exporter-api.md).

Modules: `snapshot` (the frozen result of a refresh and its pre-rendered JSON), `metrics`
(the one metric table and `families_from`), `collector` (serves pre-built families),
`refresh` (the background loop), `server` (HTTP), `cli` (entry point), `testing` (fakes).
Nothing is imported here, so `python -m exporter.metrics` and the CLI stay light.
"""
