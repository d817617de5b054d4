"""Shared by the loss benchmarks: seconds per call and peak memory of one training step, in this process."""

import resource
import time


def time_and_peak(step, device: str, repeats: int) -> dict:
    """Run ``step()`` once (warm-up, and the peak-memory measurement: CUDA's allocator peak, or the growth of this
    process's max RSS on the CPU), then ``repeats`` times timed. ``{"seconds": per call, "peak_bytes": ...}``."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    step()
    sync()
    peak = (torch.cuda.max_memory_allocated() - base_cuda if device == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync()
    return {"seconds": (time.perf_counter() - start) / repeats, "peak_bytes": peak}
