"""Does the search beat chance? Found genotypes against random ones, one training budget.

    python -m bnas_tf.quality \\
        --w1a32=bnas:runs/demo/genotype.json,pcdarts:runs/demo_pcdarts/genotype.json \\
        --w1a1=bnas:runs/demo_1bit/genotype.json,pcdarts:runs/demo_1bit_pcdarts/genotype.json \\
        --output quality.json --readme README.md

For each precision it trains every named genotype and ``--random`` genotypes
drawn uniformly from the search space (`genotypes.random_genotype`, the same
draws for both precisions), each over ``--seeds`` seeds, on the embedded
digits with one fixed budget, and reports the mean and standard deviation of
the test accuracy:

- ``w1a32``: PCNN binary weights, float activations;
- ``w1a1``: binary weights and activations, the cells' preprocessing full
  precision.

Both train with Adam (BUILD.md, "Binary networks that learn"). The random
mean is over every random genotype and seed; a found genotype beats chance
when its mean lies above it by more than the spread of the random genotypes.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np

README_BEGIN = "<!-- quality:begin -->"
README_END = "<!-- quality:end -->"
PRECISIONS = ("w1a32", "w1a1")


@dataclasses.dataclass
class Budget:
    """The training every genotype gets (`bnas_tf.train.train` arguments)."""

    init_channels: int = 8
    layers: int = 5
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 0.005

    def train_options(self, precision):
        return dict(
            dataset="digits", init_channels=self.init_channels, layers=self.layers, epochs=self.epochs,
            batch_size=self.batch_size, learning_rate=self.learning_rate, optimizer="adam", weight_decay=0.0,
            auxiliary_weight=0.0, drop_path=0.0, binarization="pcnn", binary_activations=precision == "w1a1",
            full_precision_preprocess=precision == "w1a1", verbose=0, log_every=0,
        )


def candidates(named, count, seed):
    """[(label, Genotype)]: the named genotypes, then `count` random ones."""
    from bnas_tf import genotypes

    out = [(label, genotypes.load(source)) for label, source in named]
    rng = np.random.default_rng(seed)
    out += [(f"random {i + 1}", genotypes.random_genotype(rng)) for i in range(count)]
    return out


def run(named_by_precision, *, random_count, seeds, random_seed, budget, log=print):
    """Trains every candidate of every precision over `seeds`; returns the results dict."""
    from bnas_tf import train

    runs = []
    total = sum(len(named) + random_count for named in named_by_precision.values()) * len(seeds)
    start = time.time()
    for precision, named in named_by_precision.items():
        for label, genotype in candidates(named, random_count, random_seed):
            for seed in seeds:
                with tempfile.TemporaryDirectory() as model_dir:
                    result = train.train(genotype, model_dir=model_dir, seed=seed, **budget.train_options(precision))
                runs.append({"precision": precision, "genotype": label, "seed": seed,
                             "test_accuracy": result["test_accuracy"], "params": result["params"],
                             "architecture": genotype.to_dict()})
                done = len(runs)
                eta = (time.time() - start) / done * (total - done)
                log(f"[{done}/{total}] {precision} {label} seed {seed}: test accuracy "
                    f"{result['test_accuracy']:.4f} (ETA {eta / 60:.0f} min)")
    return {"budget": dataclasses.asdict(budget), "seeds": list(seeds), "random": random_count,
            "random_seed": random_seed, "runs": runs, "seconds": time.time() - start}


def summarize(results):
    """[(precision, label, mean, std, n)]: per named genotype, per random genotype, and
    'random (all)' over every random run."""
    rows = []
    for precision in PRECISIONS:
        runs = [r for r in results["runs"] if r["precision"] == precision]
        labels = list(dict.fromkeys(r["genotype"] for r in runs))
        groups = [(label, [r["test_accuracy"] for r in runs if r["genotype"] == label]) for label in labels]
        groups.append(("random (all)", [r["test_accuracy"] for r in runs if r["genotype"].startswith("random ")]))
        for label, values in groups:
            if values:
                rows.append((precision, label, float(np.mean(values)), float(np.std(values)), len(values)))
    return rows


def format_markdown(results, command):
    budget = results["budget"]
    out = [
        f"Each genotype trained {budget['epochs']} epochs ({budget['layers']} cells, C={budget['init_channels']}, "
        f"batch {budget['batch_size']}, Adam {budget['learning_rate']}) on the digits, "
        f"seeds {', '.join(map(str, results['seeds']))}; test accuracy mean ± std over the seeds "
        f"({results['seconds'] / 60:.0f} min in all).",
        "",
        f"Regenerate: `{command}`",
        "",
        "| precision | genotype | test accuracy | runs |",
        "|---|---|---|---|",
    ]
    for precision, label, mean, std, n in summarize(results):
        out.append(f"| {precision.upper()} | {label} | {mean:.4f} ± {std:.4f} | {n} |")
    return "\n".join(out)


def _measuring_args(argv):
    """`argv` without the options that only say where results go (--output, --readme, --from_json)."""
    out, skip = [], False
    for arg in argv:
        name = arg.split("=", 1)[0]
        if skip:
            skip = False
        elif name in ("--output", "--readme", "--from_json"):
            skip = "=" not in arg
        else:
            out.append(arg)
    return out


def _named(text, parser, flag):
    named = []
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        label, sep, source = item.partition(":")
        if not sep or not label or not source:
            parser.error(f"--{flag}: expected LABEL:GENOTYPE pairs separated by commas; got {item!r}")
        named.append((label, source))
    return named


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bnas_tf.quality",
                                     description="Found genotypes against random ones under one training budget.")
    for precision in PRECISIONS:
        parser.add_argument(f"--{precision}", help="LABEL:GENOTYPE pairs (a genotype.json or a published name), "
                                                  "separated by commas; the precision is skipped when empty")
    parser.add_argument("--random", type=int, default=5, help="random genotypes per precision (default 5)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (default 0,1,2)")
    parser.add_argument("--random_seed", type=int, default=0, help="seed of the random genotypes (default 0)")
    for field in dataclasses.fields(Budget):
        parser.add_argument(f"--{field.name}", type=type(field.default),
                            default=field.default, help=f"training budget (default {field.default})")
    parser.add_argument("--output", help="also write the results as JSON to this file")
    parser.add_argument("--readme", help=f"write the table into this file between {README_BEGIN} and {README_END}")
    parser.add_argument("--from_json", help="format the results saved by --output instead of running")
    args = parser.parse_args(argv)
    args.named = {p: _named(getattr(args, p), parser, p) for p in PRECISIONS if getattr(args, p)}
    if not args.from_json and not args.named:
        parser.error("name at least one genotype with --w1a32 or --w1a1")
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers; got {args.seeds!r}")
    if not args.seed_list or args.random < 0:
        parser.error("--seeds needs at least one seed and --random a number >= 0")
    for field in dataclasses.fields(Budget):
        if getattr(args, field.name) <= 0:
            parser.error(f"--{field.name}: expected a positive number; got {getattr(args, field.name)}")
    return args


def main(argv=None):
    argv = list(argv if argv is not None else sys.argv[1:])
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)
    else:
        from absl import logging

        logging.set_verbosity(logging.WARNING)
        budget = Budget(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Budget)})
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        with contextlib.redirect_stdout(sys.stderr):
            results = run(args.named, random_count=args.random, seeds=args.seed_list,
                          random_seed=args.random_seed, budget=budget, log=log)
        results["argv"] = argv
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)
    command = " ".join(["python -m bnas_tf.quality", *_measuring_args(results.get("argv", argv))])
    markdown = format_markdown(results, command)
    if args.readme:
        from bnas_tf.bench import update_readme

        update_readme(args.readme, markdown, README_BEGIN, README_END)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
