"""The entry points, the layer above the engine (`passes/`) and the core: `optimize` (api.py),
`optimize_onnx` (onnx_api.py), the command line (cli.py), the demo, plot and curve commands, and
what they share: the checked-optimize driver (driver.py), the whole-model retries (retry.py) and
the approximate ladder (approximate.py). Nothing below imports this package."""
