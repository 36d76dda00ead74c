"""A differential fuzzer for the optimizer: seeded random small conv graphs through optimize(),
optimize_onnx() and the rewrite-onnx CLI, each result compared with the original on fresh inputs.

    python -m tests.fuzz --seconds 300 --seed 1

Modules, one job each:
    units.py     conv units ([pad] → conv → [BN] → act → [scale]) from their specs
    graphs.py    composite blocks and the model built from a spec; seeded inputs
    generate.py  the random case (model spec, options, fresh inputs) of a seed
    compare.py   errors, the acceptance rule, snapshots of the input, deliberate corruption
    run.py       one case through optimize() (fx), judged; run_case over formats
    onnx_run.py  the onnx and cli formats
    shrink.py    greedy shrinking of a failing case, and its repro
    selfcheck.py the fuzzer proves its judges can fail
    tally.py     counts over a run
    cli.py       the command line
"""
