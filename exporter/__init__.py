"""The Preshift exporter, run with `preshift exporter` (see docs/metrics.md, exporter-api.md).

Modules: `snapshot` (the frozen result of a refresh and its pre-rendered JSON), `document`
(the JSON's look-ahead sections), `metrics` (the one metric table and `fill`/`families_from`),
`metrics_assess` (the look-ahead samples), `metrics_doc` (docs/metrics.md), `exposition`
(the text format, rendered once per refresh), `collector` (serves it), `refresh` (the
background loop), `server` (HTTP), `service` (wires them), `fitworker` (ETS fits in a child
process), `cli` (entry point), `testing` and `synthetic` (fakes, and a large world for
benchmarks). Nothing is imported here, so `python -m exporter.metrics` and the CLI stay light.
"""
