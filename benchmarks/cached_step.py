"""Peak memory and seconds per training step against batch size: the plain step, activation checkpointing, and
the cached step (``trainer.embed_chunk``, GradCache), for a ViT image tower and a BERT text tower.

    python benchmarks/cached_step.py                                  # CPU: ViT-Ti/16 at 64 px + BERT-mini, B 32-256
    python benchmarks/cached_step.py --device cuda --size vit-b16     # GPU: ViT-B/16 + BERT-base, bf16, B to 65536
    python benchmarks/cached_step.py --size tiny --batches 8,16 --chunk 4 --repeats 1   # the code path, in seconds

The model is mmcore's own: a recipe (``timm_image`` on images, ``hf_text`` on texts, the ``pairwise`` strategy,
``infonce`` with ``tile_size`` so the loss never builds a ``[B, B]`` matrix) structured by
``mmcore.recipe.structure_recipe`` and built by ``mmcore.train.build.build_model`` from input specs alone (no
dataset). Offline: the timm tower is built with ``pretrained = ""`` (random weights); the text tower from a
``BertConfig`` saved, with a small WordPiece vocabulary, into a temporary model directory and built with
``pretrained = False`` (the plugin then reads the config only, never a weight file). The batch is what the
encoders' preprocess + collate produce: images ``[B, 3, H, W]`` float32, and ``{input_ids, attention_mask,
token_type_ids}`` ``[B, L]`` int64 (random token ids, random lengths from ``L/2`` to ``L``, padding masked out).

Modes (one step = ``BindingModule.step_losses(batch, chunk)``, ``finish(sum of losses).backward()``, gradients
cleared before each step):

- ``plain``: ``chunk = 0``, every encoder runs once on the whole batch with its graph;
- ``checkpointed``: the plain step with ``[encoders.<m>] grad_checkpointing = true`` on both towers (the module
  turns it on with :func:`mmcore.train.grad_checkpointing.enable`: timm's ``set_grad_checkpointing`` and the
  transformers model's own switch, block by block; the table's last line says which);
- ``cached``: ``chunk = --chunk``: the encoders run ``chunk`` rows at a time, first without a graph, then again
  chunk by chunk with one (:mod:`mmcore.train.cached`);
- ``cached+ckpt``: both.

Peak memory: each (mode, B) runs one step in a fresh subprocess, and its peak is what that step adds over the built
model and the batch (the same in every mode): ``torch.cuda.max_memory_allocated`` minus the memory allocated
before the step on a GPU; on the CPU, the growth of the process's max RSS, with glibc's mmap threshold fixed at
64 KiB (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors go back to the system. (With glibc's default, the
threshold rises to each freed block's size and later tensors come from a heap that is never trimmed, so max RSS
measures what the allocator retained: forward + backward of the ViT-Ti/16 tower alone at B = 256 then showed 2%
saved by activation checkpointing, against 81% with the fixed threshold.) A step that runs out of memory is reported as "does not
fit". After the step every trained parameter must hold a gradient, else the configuration is reported as failed.

Seconds per step: for each B, one more subprocess (glibc's default allocator, since a fixed threshold slows the
modes unequally) builds the modes that fit, runs one warm-up step of each, then ``--repeats`` rounds in which the
modes take turns; each mode's figure is its fastest step (the least disturbed by other processes on a shared
machine; the load average is printed before and after). The ratios are to the plain step at the same B, measured
in the same run; where the plain step does not fit there is none (compare with the largest B where it does).

``--dtype bf16`` (the default on CUDA) runs the step under ``torch.autocast(dtype=bfloat16)`` with float32
weights, as Lightning's ``bf16-mixed`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

# image: a timm model name and square input size; text: a BertConfig's sizes and the token length L
SIZES = {
    # ViT-Ti/16 (width 192, depth 12, 3 heads) at 64 px = 16 patches + CLS; BERT-mini (4 layers, width 256)
    "small": {"image": "vit_tiny_patch16_224", "img_size": 64, "embed_dim": 128, "length": 32,
              "text": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                       "intermediate_size": 1024, "vocab_size": 8192}},
    # ViT-B/16 at 224 px (197 tokens); BERT-base (12 layers, width 768) over CLIP's 77 tokens
    "vit-b16": {"image": "vit_base_patch16_224", "img_size": 224, "embed_dim": 512, "length": 77,
                "text": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                         "intermediate_size": 3072, "vocab_size": 30522}},
    # timm's 6-block, 64-wide test ViT at 32 px and a 2-layer BERT: checks the code path in seconds
    "tiny": {"image": "test_vit", "img_size": 32, "embed_dim": 16, "length": 8,
             "text": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "intermediate_size": 64, "vocab_size": 256}},
}
MMAP_THRESHOLD = 65536
"""bytes: glibc serves every allocation this large or larger with its own mmap, returned to the system on free"""
MODES = {"plain": (False, False), "checkpointed": (False, True), "cached": (True, False), "cached+ckpt": (True, True)}
"""mode -> (cached step, activation checkpointing)"""


def save_text_model(directory: str, text: dict, length: int) -> str:
    """A BERT config and a WordPiece tokenizer (its vocabulary: the special tokens and filler words; the batch's
    token ids are drawn directly, the tokenizer only has to load) saved as a transformers model directory."""
    from transformers import BertConfig, BertTokenizer

    BertConfig(max_position_embeddings=max(512, length), **text).save_pretrained(directory)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(directory)
    return directory


def build_module(size: dict, text_dir: str, chunk: int, checkpointing: bool, tile: int):
    """The BindingModule of the recipe (see the module docstring), in training mode."""
    import mmcore
    from mmcore.recipe import structure_recipe
    from mmcore.registry import get_registry
    from mmcore.train.build import build_model

    raw = {
        "name": "cached-step-benchmark", "seed": 0, "embed_dim": size["embed_dim"],
        # never built: build_model takes the input specs below; structure_recipe wants a dataset section
        "dataset": {"name": "synthetic", "modalities": {"image": {"input_dim": 8}, "text": {"input_dim": 8}}},
        "encoders": {
            "image": {"name": "timm_image", "model": size["image"], "pretrained": "", "img_size": size["img_size"],
                      "tower": "train", "grad_checkpointing": checkpointing},
            "text": {"name": "hf_text", "model": text_dir, "max_length": size["length"], "pooling": "mean",
                     "tower": "train", "grad_checkpointing": checkpointing},
        },
        "anchor": {"name": "pairwise"},
        "loss": {"name": "infonce", "tile_size": tile},
        "evaluators": [],
        "trainer": {"embed_chunk": chunk},  # for the record only: the steps pass their chunk to step_losses
    }
    registry = get_registry()
    recipe = structure_recipe(raw, registry, "<cached_step benchmark>")
    inputs = {"image": mmcore.InputSpec.raw("image"), "text": mmcore.InputSpec.raw("text")}
    module = build_model(recipe, inputs, frozenset({frozenset({"image", "text"})}), registry=registry,
                         pretrained=False)
    return module.train()


def make_batch(batch: int, size: dict, device: str):
    """A collated batch of ``batch`` image-text pairs, every modality present in every row."""
    import torch

    from mmcore.contracts import Batch

    generator = torch.Generator(device).manual_seed(1)  # drawn where it is used: 37 GiB of images at B = 65536
    length, vocab = size["length"], size["text"]["vocab_size"]
    images = torch.randn(batch, 3, size["img_size"], size["img_size"], generator=generator, device=device)
    lengths = torch.randint(max(1, length // 2), length + 1, (batch,), generator=generator, device=device)
    mask = (torch.arange(length, device=device)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, vocab, (batch, length), generator=generator, device=device) * mask
    text = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return Batch(inputs={"image": images, "text": text},
                 present={m: torch.ones(batch, dtype=torch.bool, device=device) for m in ("image", "text")})


def prepared_steps(modes: list, batch: int, chunk: int, size_name: str, device: str, dtype: str, tile: int) -> dict:
    """mode -> ``step()``: one training step on one batch of ``batch`` rows (gradients cleared first). Modes that
    share a checkpointing setting share one module; every module starts from the same seed."""
    import torch

    size = SIZES[size_name]
    data = make_batch(batch, size, device)
    modules, steps = {}, {}
    with tempfile.TemporaryDirectory() as text_dir:
        text_model = save_text_model(text_dir, size["text"], size["length"])
        for mode in modes:
            cached, checkpointing = MODES[mode]
            if checkpointing not in modules:
                torch.manual_seed(0)
                modules[checkpointing] = build_module(size, text_model, chunk, checkpointing, tile).to(device)
            steps[mode] = training_step(modules[checkpointing], data, chunk if cached else 0, device, dtype)
    return steps


def training_step(module, data, chunk: int, device: str, dtype: str):
    """``step()``: ``step_losses(data, chunk)``, ``finish(total).backward()``; it raises if a trained parameter
    got no gradient. ``step.how``: how the module's encoders checkpoint their activations."""
    import contextlib

    import torch

    def step():
        module.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext():
            losses, finish = module.step_losses(data, chunk)
            surrogate = finish(torch.stack(list(losses.values())).sum())
        surrogate.backward()
        missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
        if missing:
            raise RuntimeError(f"{len(missing)} trained parameters got no gradient, e.g. {missing[0]}")

    step.how = module.grad_checkpointing
    return step


def peak_of(mode: str, batch: int, chunk: int, size: str, device: str, dtype: str, tile: int) -> dict:
    """``{"peak_bytes", "checkpointing"}`` of the first step of ``mode`` in this process: the CUDA allocator's peak
    over what was allocated before it, or the growth of this process's max RSS (run with a fixed glibc mmap
    threshold, see the module docstring)."""
    import torch

    step = prepared_steps([mode], batch, chunk, size, device, dtype, tile)[mode]
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before, "checkpointing": step.how}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    return {"peak_bytes": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024,
            "checkpointing": step.how}


def seconds_of(modes: list, batch: int, chunk: int, size: str, device: str, dtype: str, tile: int,
               repeats: int) -> dict:
    """mode -> the fastest of ``repeats`` timed steps, after one warm-up step of each; the modes take turns."""
    steps = prepared_steps(modes, batch, chunk, size, device, dtype, tile)
    for step in steps.values():
        step()
    best = {mode: float("inf") for mode in modes}
    for _ in range(repeats):
        for mode, step in steps.items():
            best[mode] = min(best[mode], timed(step, device))
    return best


def timed(step, device: str) -> float:
    """Seconds of one ``step()`` (CUDA synchronised at both ends)."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


def run_isolated(what: str, args: list, env: dict | None = None) -> dict:
    """``peak_of`` or ``seconds_of`` (``what``) in a fresh subprocess; ``{"error": ...}`` when it failed."""
    proc = subprocess.run([sys.executable, __file__, f"--{what}", json.dumps(args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        if "out of memory" in proc.stderr.lower() or proc.returncode in (-9, 137):  # CUDA OOM, or the OOM killer
            return {"error": "does not fit"}
        lines = [line for line in proc.stderr.strip().splitlines() if "Error" in line] or [f"exit {proc.returncode}"]
        return {"error": lines[-1][:100]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def device_line(device: str) -> str:
    import torch

    where = torch.cuda.get_device_name(0) if device == "cuda" else f"{platform.machine()}, {os.cpu_count()} CPUs"
    return f"{where}, torch {torch.__version__}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="small (CPU default), vit-b16 (CUDA "
                        "default), tiny (code path check)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default: per device)")
    parser.add_argument("--chunk", type=int, default=None, help="rows per encoder call of the cached step "
                        "(default: 32 on the CPU, 1024 on CUDA)")
    parser.add_argument("--tile", type=int, default=None, help="infonce tile_size (default: 64 CPU, 8192 CUDA)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default=None, help="fp32 (CPU default), bf16 "
                        "autocast (CUDA default)")
    parser.add_argument("--modes", default="plain,checkpointed,cached,cached+ckpt",
                        help=f"comma-separated, from {','.join(MODES)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps of each mode after its warm-up (the "
                        "fastest is reported)")
    parser.add_argument("--peak", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak or args.seconds:
        print(json.dumps(peak_of(*json.loads(args.peak)) if args.peak else seconds_of(*json.loads(args.seconds))))
        return
    gpu = args.device == "cuda"
    size = args.size or ("vit-b16" if gpu else "small")
    batches = ([int(b) for b in args.batches.split(",")] if args.batches else
               [1024, 4096, 16384, 65536] if gpu else [32, 64, 128, 256])
    chunk = args.chunk or (1024 if gpu else 32)
    tile = args.tile or (8192 if gpu else 64)
    dtype = args.dtype or ("bf16" if gpu else "fp32")
    repeats = max(1, args.repeats)
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    modes = ["plain"] + [m for m in modes if m != "plain"]  # the baseline of the ratios
    peak_env = {} if gpu else {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    spec = SIZES[size]
    print(f"device: {device_line(args.device)}; size {size}: {spec['image']} at {spec['img_size']} px, BERT "
          f"{spec['text']['num_hidden_layers']}x{spec['text']['hidden_size']} over {spec['length']} tokens, "
          f"embed_dim {spec['embed_dim']}; {dtype}; infonce tile_size {tile}; seconds: fastest of {repeats} steps "
          f"per mode after 1 warm-up; load average {load()}")
    print("peak = memory the step adds over the model and the batch; ratios: to the plain step at the same B\n")
    print("| mode | B | chunk | peak MiB | s/step | time x plain | memory x plain |")
    print("|---|---|---|---|---|---|---|")
    how = None
    for batch in batches:
        peaks = {mode: run_isolated("peak", [mode, batch, chunk, size, args.device, dtype, tile], peak_env)
                 for mode in modes}
        fitting = [mode for mode in modes if "error" not in peaks[mode]]
        timing = [batch, chunk, size, args.device, dtype, tile, repeats]
        seconds = run_isolated("seconds", [fitting, *timing]) if fitting else {}
        if "error" in seconds:  # e.g. the modes together ran out of memory: each alone
            seconds = {mode: run_isolated("seconds", [[mode], *timing]) for mode in fitting}
            seconds = {mode: value.get(mode, value) for mode, value in seconds.items()}
        for mode in modes:
            used = chunk if MODES[mode][0] else 0
            failed = peaks[mode].get("error") or (seconds[mode].get("error") if isinstance(seconds[mode], dict)
                                                  else None)
            if failed:
                print(f"| {mode} | {batch} | {used} | {failed} | | | |", flush=True)
                continue
            how = how or (peaks[mode]["checkpointing"] or None)
            memory, time_ = peaks[mode]["peak_bytes"], seconds[mode]
            ratios = "| |"
            if "plain" in fitting and isinstance(seconds["plain"], float):
                ratios = (f"| {time_ / seconds['plain']:.2f} | "
                          f"{memory / max(peaks['plain']['peak_bytes'], 1):.2f} |")
            print(f"| {mode} | {batch} | {used} | {memory / 2**20:.1f} | {time_:.3f} {ratios}", flush=True)
    print(f"\nactivation checkpointing: {how or 'not measured'}; load average at the end {load()}")


if __name__ == "__main__":
    main()
