"""The one-command GPU campaign: every GPU check of the project in one run.

    python -m tests.benchmarks.campaign --out results/

Sections, in order (each records its own errors and the run goes on; each stops starting new
work once its share of ``--budget`` seconds is spent, recording what it skipped):
  env       device, library versions, the measured copy bandwidth and fp16 matrix rate
  numerics  the Triton kernels on the GPU against float64 over the option grid
  layers    the DESIGN.md layer suite, fp16 and fp32 (tf32), fused kernel vs eager NCHW /
            channels_last / torch.compile default / max-autotune, in CUDA graphs
  se        squeeze-excitation layers: FusedSepConvSE2d vs the eager block and torch.compile
  models    whole torchvision models, optimize(model.cuda().half()) vs eager / compile /
            reduce-overhead / max-autotune at batch 1 and 64, outputs checked against float64
Writes campaign.json (everything), campaign.md (the tables) and PNG plots under --out, and
prints a one-screen summary. ``--render FILE`` rewrites the tables, plots and summary from a
recorded campaign.json, without a GPU.
"""
