"""The forecast: images/s and scaling efficiency at sizes not yet measured, from measured or stated
inputs (the equations in model.py, their sources in docs/performance.md)."""
