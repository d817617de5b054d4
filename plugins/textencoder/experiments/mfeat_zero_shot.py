"""Zero-shot classification of every mfeat view from text prompts, with the prompts of training and with new ones.

Takes finished runs of ``recipes/mfeat_text_zero_shot.toml`` (text encoder ``sentence_transformer``). For each view
it embeds the test digits and classifies each by the nearest prompt embedding (one prompt per digit):

* ``trained``: the captions the text modality was trained on ("a handwritten digit seven");
* new phrasings, never seen in training, embedded by the same frozen MiniLM and trained head (``embed_new``).

    mmcore run recipes/mfeat_text_zero_shot.toml --out runs/zs-0
    python plugins/textencoder/experiments/mfeat_zero_shot.py runs/zs-0 [runs/zs-1 ...]

Prints one row per prompt set: the accuracy of each view (chance 0.1), and the mean over runs when given several.
"""

import argparse

import numpy as np

import mmcore

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PROMPTS = {
    "trained": [f"a handwritten digit {n}" for n in NAMES],
    "the number N": [f"the number {n}" for n in NAMES],
    "a scan of a handwritten N": [f"a scan of a handwritten {n}" for n in NAMES],
    "numeral: the digit 7": [f"the digit {k}" for k in range(10)],
    "bare word: seven": list(NAMES),
}


def accuracies(run_dir: str) -> dict:
    """``{prompt set: {view: accuracy}}`` on the run's test split."""
    model = mmcore.load(run_dir, device="cpu")
    test = model.data().splits.test
    labels = test.labels.numpy()
    views = [m for m in model.modalities if m != "text"]
    z = {m: model.encode(m, test.inputs[m].numpy()) for m in views}
    text = model.module.encoders["text"]
    out = {}
    for name, prompts in PROMPTS.items():
        p = mmcore.unit_rows(text.embed_new(prompts)).numpy()  # into the shared space, as encode() does
        out[name] = {m: float(np.mean((z[m] @ p.T).argmax(1) == labels)) for m in views}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    results = [accuracies(run) for run in args.runs]
    views = list(results[0]["trained"])
    print(f"{'prompts':28}" + "".join(f"{v:>24}" for v in views))
    for name in PROMPTS:
        cells = []
        for v in views:
            values = [r[name][v] for r in results]
            cells.append(f"{np.mean(values):.3f}" + (f" ({' '.join(f'{x:.2f}' for x in values)})" if len(values) > 1
                                                      else ""))
        print(f"{name:28}" + "".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
