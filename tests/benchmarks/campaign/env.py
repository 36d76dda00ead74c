"""Where the campaign ran: device, versions, and the two measured ceilings of METHOD.md."""
import datetime
import importlib
import statistics

import torch


def _version(name: str) -> str:
    try:
        return importlib.import_module(name).__version__
    except Exception:  # noqa: BLE001 - absent or broken: say so, never fail the campaign
        return "absent"


def _event_median(fn, repeats: int) -> float:
    """Median seconds of fn() between CUDA events, after two warm-up calls."""
    fn(), fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
    return statistics.median(samples)


def measure_ceilings() -> dict:
    """Copy bandwidth (bytes read + written per second, 1 GiB device-to-device) and the dense
    fp16 matrix rate (8192^3 product on random data), as the floor computations use them."""
    src = torch.randn(2 ** 29, device="cuda", dtype=torch.float16)  # 1 GiB
    dst = torch.empty_like(src)
    copy_s = _event_median(lambda: dst.copy_(src), 10)
    del src, dst
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    mm_s = _event_median(lambda: a @ b, 10)
    return dict(copy_bandwidth=2 * 2 ** 30 / copy_s, fp16_matrix_rate=2 * 8192 ** 3 / mm_s)


def describe(device: str) -> dict:
    """The run's context: date, device, versions (and the ceilings on a GPU)."""
    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                torch=torch.__version__, cuda=torch.version.cuda,
                **{name: _version(name) for name in ("triton", "torchvision", "timm", "onnx", "onnxruntime")})
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, sms=props.multi_processor_count, l2_bytes=props.L2_cache_size,
                    memory_bytes=props.total_memory, **measure_ceilings())
    else:
        info.update(device="cpu (dry run)", sms=0, l2_bytes=0, memory_bytes=0)
    return info
