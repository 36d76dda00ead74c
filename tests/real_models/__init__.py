"""Real models, end to end: one file per question.

The built-in zoo (models_under_test: eleven architectures written here, seeded, BatchNorm calibrated):
  test_zoo_models.py      Is the zoo what it claims? Registry, parameter and block counts against the
                          papers, seeded init, FX traceability, checkpoint loading. No rewrite runs.
  test_zoo_optimize.py    Does optimize() keep every zoo model's function and apply the expected rewrites?
                          (target="h100", force_fuse=True: every site the kernel can run)
  test_zoo_onnx.py        The same through an ONNX export and optimize_onnx, in onnxruntime.

Real torchvision and timm models (models_under_test.real: random init, calibrated BatchNorm):
  test_real_models_build.py     Do the nineteen build, seeded and calibrated, and run?
  test_real_models_optimize.py  Through optimize(): every foldable BatchNorm folded, every depthwise
                                conv fused or declined with a reason, float64 agreement.
  test_real_models_parity.py    FX and ONNX (export + optimize_onnx) on each: both match float64 on
                                fresh inputs, and both find the same sites, kinds and statuses.

ONNX files as other exporters write them:
  test_onnx_files_other_exporters.py  Dynamic dimensions in every spelling, the float64 reference,
                                      onnxslim's clean-up, a real Paddle2ONNX file.

helpers.py holds what more than one file needs (real_file: a model file from an installed wheel).
Each file's docstring says what it answers and how long it took here (2-core machine, 2026-12-07):
zoo_models 2 min, zoo_optimize 4 min, zoo_onnx 101 s, real_models_build 3 min, real_models_optimize
7 min, real_models_parity 7 min, onnx_files_other_exporters 29 s; about 25 min in all.
"""
