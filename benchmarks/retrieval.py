"""Recall@K over a large gallery: exact faiss Flat search in query chunks, and an approximate IVF index.

    python benchmarks/retrieval.py                        # CPU-sized: 200,000 x 128
    python benchmarks/retrieval.py --gallery 1000000 --dim 512 --queries 10000

Embeddings are synthetic pairs (query = gallery item + noise, normalised), so every query has one true partner.
Peak memory is the process's peak resident set size; the table gives the gallery's own size for scale. The IVF
index is built once ("build s" repeats its time) and searched at two ``nprobe`` values. faiss uses every core.
"""

import argparse
import resource
import time

import numpy as np


def main() -> None:
    import faiss

    from mmcore.builtins.evaluators import RetrievalConfig, build_index, ranks_of_positives

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--noise", type=float, default=0.6)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((args.gallery, args.dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    partners = rng.choice(args.gallery, args.queries, replace=False)
    queries = gallery[partners] + args.noise * rng.standard_normal((args.queries, args.dim), dtype=np.float32) / (
        args.dim ** 0.5)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    chunk = RetrievalConfig().chunk_size
    print(f"gallery {args.gallery:,} x {args.dim} ({gallery.nbytes / 2**30:.2f} GiB), {args.queries:,} queries, "
          f"chunk {chunk}")
    print(f"{'index':>16} {'build s':>8} {'search s':>9} {'R@1':>6} {'R@10':>6} {'R@10 vs Flat':>13} "
          f"{'peak RSS GiB':>13}")
    exact_top = None
    nlist = int(4 * args.gallery ** 0.5)
    index, built_for = None, None
    for factory, nprobe in (("Flat", 0), (f"IVF{nlist},Flat", 16), (f"IVF{nlist},Flat", 64)):
        start = time.perf_counter()
        if factory != built_for:  # one IVF index, searched at two nprobe values
            index, built_for = build_index(gallery, factory, max(nprobe, 1)), factory
            built = time.perf_counter() - start
        if nprobe:
            faiss.extract_index_ivf(index).nprobe = nprobe
        start = time.perf_counter()
        found = np.concatenate([index.search(queries[i:i + chunk], 10)[1] for i in range(0, len(queries), chunk)])
        searched = time.perf_counter() - start
        r1 = float(np.mean(found[:, 0] == partners))
        r10 = float(np.mean((found == partners[:, None]).any(1)))
        if exact_top is None:
            exact_top = found
        agreement = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact_top)]))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        label = factory if not nprobe else f"{factory}/p{nprobe}"
        print(f"{label:>16} {built:>8.2f} {searched:>9.2f} {r1:>6.3f} {r10:>6.3f} {agreement:>13.3f} {peak:>13.2f}",
              flush=True)
    start = time.perf_counter()
    ranks = ranks_of_positives(queries, gallery[partners], chunk)
    print(f"mean rank over the partners' own gallery (chunked exact matmul): {ranks.mean():.2f} in "
          f"{time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
