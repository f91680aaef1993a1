"""Test and benchmark helpers, kept out of the runtime layers (import-linter forbids any other trafficsearch
module to import this package): nothing the CLI or the service runs depends on them.

- color: ColorModel, a deterministic RetrievalModel (mean colour in, colour word out) and colour galleries;
- datasets: tiny competition-layout data sets (coloured boxes + captions) and the tiny training config;
- offline: open_clip models with random weights built with no download (seed recipe configs);
- fake_engine: FakeEngine, the SearchEngine stand-in over generated images (service tests, page, load);
- loadgen: the closed-loop HTTP load generator;
- service: running the service in a child process for the load and overhead benchmarks.
"""
