"""Face verification: the 10-fold accuracy protocol of LFW, CFP-FP and AgeDB-30.

IJCV Sec. 4.4 (Table 5) reports the verification accuracy of the face
networks trained on CASIA-WebFace on LFW, CFP-FP and AgeDB-30, measured with
the standard protocol of LFW's "unrestricted" setting as insightface and the
authors' Face_Pytorch (eval_lfw.py) implement it:

1. **Embeddings** (`embed`): each image's embedding plus the embedding of the
   image flipped left-right, summed and L2-normalised (insightface's
   ``embeddings_list[0] + embeddings_list[1]``; Face_Pytorch concatenates the
   two instead, and subtracts the training folds' mean feature; neither is
   done here).
2. **Scores**: the cosine similarity of the two embeddings of each pair;
   a pair is declared "same" when its score is strictly above a threshold.
3. **10 folds** (`kfold_accuracy`): contiguous folds, fold i = the pairs
   [i n / 10, (i + 1) n / 10) (LFW's ten splits; sklearn's unshuffled KFold
   as insightface uses it; when 10 does not divide n the first n mod 10 folds
   take one pair more). For each fold the threshold is chosen on the nine
   other folds: the lowest threshold of a grid that maximises their accuracy;
   the held-out fold's accuracy at that threshold is the fold's accuracy. The
   result is the mean and the (population) standard deviation over folds.
   The default grid is Face_Pytorch's, -1 to 1 in steps of 1e-4 (insightface
   uses squared distances 0 to 4 in steps of 0.01, i.e. a 0.005 cosine step).
   Ties: the maximising grid points usually form one run (the gap between two
   training scores); the middle point of the lowest such run is taken (the
   lower of the two middle points for an even count). That is Face_Pytorch's
   choice, the mean of the tied thresholds, kept on the grid and on a
   maximiser when the ties are not contiguous. (insightface takes the first in
   its distance grid, the highest cosine; the lowest maximiser would sit on
   the highest training negative, where held-out negatives fall above it.)
4. **TAR@FAR** (not folded; over all pairs): for a false-accept rate f, the
   threshold is the (k + 1)-th highest score of the negative pairs, k =
   floor(f n_neg), so that at most k negatives (a rate <= f) score above it;
   TAR is the fraction of positive pairs scoring above it. Reported only when
   k >= 1 (at least 1 / f negative pairs) and there are positive pairs,
   else None. (insightface's ``calculate_val`` folds and interpolates a
   distance grid instead; over all pairs the estimate uses every negative.)

Verification sets use insightface's ``.bin`` layout: ``images`` [2N, H, W, 3]
with the pairs interleaved, images[2i] and images[2i + 1] forming pair i, and
``issame`` [N] booleans.
"""

import dataclasses
import math

import numpy as np

from bnas_tf.errors import ConfigError, DataError, bad_value

NFOLDS = 10
# Face_Pytorch's eval_lfw.py grid: thrNum = 10000, thresholds k / 10000 for k in [-10000, 10000].
DEFAULT_THRESHOLDS = np.arange(-10000, 10001) / 10000.0
DEFAULT_THRESHOLDS.setflags(write=False)
DEFAULT_FARS = (1e-3, 1e-2)


@dataclasses.dataclass(frozen=True)
class VerificationResult:
    """The 10-fold verification result of one set.

    accuracy_mean, accuracy_std: mean and population standard deviation of
    the fold accuracies (fractions in [0, 1]); fold_accuracies, thresholds:
    per fold, the held-out accuracy and the cosine threshold chosen on the
    other folds; tar_at_far: {FAR: TAR or None}, over all pairs.
    """

    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: tuple
    thresholds: tuple
    tar_at_far: dict


def _check_positive_int(name, value, least=1):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
        raise bad_value(name, value, f"an integer >= {least}")
    return int(value)


def _l2_normalize(x):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _model_outputs(model, batch):
    out = model.predict_on_batch(batch)
    out = np.asarray(out, dtype=np.float64)
    if out.ndim != 2 or out.shape[0] != batch.shape[0]:
        raise DataError(f"The embedding model must return [batch, D] embeddings; it returned shape {out.shape} "
                        f"for a batch of {batch.shape[0]} images.")
    return out


def embed(model, images, *, batch_size=64, flip=True):
    """L2-normalised embeddings [N, D] (float32) of `images` [N, H, W, C].

    `images` must be floats already in the model's input normalisation (the
    one it was trained with, e.g. (x / 255 - 0.5) / 0.5); integer images are
    refused rather than silently fed unnormalised. They are read `batch_size`
    at a time (a np.memmap is converted one batch at a time). With `flip`, each batch and its left-right mirror image (axis 2)
    run in one call of 2 * batch_size images and the two embeddings are
    summed before the normalisation, as insightface does.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    if not isinstance(flip, (bool, np.bool_)):
        raise bad_value("flip", flip, "True or False")
    if not isinstance(images, np.ndarray):  # a np.memmap stays one
        images = np.asarray(images)
    if len(images.shape) != 4 or images.shape[0] == 0:
        raise DataError(f"`images` must be a non-empty [N, H, W, C] array; received shape {tuple(images.shape)}.")
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"`images` must be floats in the model's input normalisation; received dtype {images.dtype}. "
                        "Normalise them first, as for training.")
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        batch = np.asarray(images[start:start + batch_size], dtype=np.float32)
        if flip:
            out = _model_outputs(model, np.concatenate([batch, batch[:, :, ::-1, :]], axis=0))
            out = out[:len(batch)] + out[len(batch):]
        else:
            out = _model_outputs(model, batch)
        chunks.append(out)
    embeddings = np.concatenate(chunks, axis=0)
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise DataError(f"The model produced non-finite embeddings for {int(bad.sum())} of {len(bad)} images "
                        f"(first: image {int(np.argmax(bad))}).")
    return _l2_normalize(embeddings).astype(np.float32)


def _check_pairs(embeddings1, embeddings2, issame, nfolds):
    e1 = np.asarray(embeddings1, dtype=np.float64)
    e2 = np.asarray(embeddings2, dtype=np.float64)
    if e1.ndim != 2 or e1.shape != e2.shape:
        raise DataError(f"`embeddings1` and `embeddings2` must be [N, D] arrays of one shape; received shapes "
                        f"{e1.shape} and {e2.shape}.")
    issame = np.asarray(issame)
    if issame.shape != (e1.shape[0],):
        raise DataError(f"`issame` must hold one flag per pair ({e1.shape[0]} pairs); received shape {issame.shape}.")
    if issame.dtype != bool:
        if not np.isin(issame, (0, 1)).all():
            raise DataError("`issame` must be booleans (or 0 / 1).")
        issame = issame.astype(bool)
    for name, e in (("embeddings1", e1), ("embeddings2", e2)):
        if not np.isfinite(e).all():
            raise DataError(f"`{name}` holds non-finite values (NaN or Inf): the embedding network diverged?")
    if e1.shape[0] < nfolds:
        raise DataError(f"{e1.shape[0]} pairs cannot make {nfolds} folds: at least one pair per fold is needed.")
    return e1, e2, issame


def _check_thresholds(thresholds):
    if thresholds is None:
        return DEFAULT_THRESHOLDS
    grid = np.asarray(thresholds, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all():
        raise bad_value("thresholds", thresholds, "a non-empty 1-D array of finite numbers")
    return np.unique(grid)  # sorted: the first maximiser is the lowest threshold


def _check_fars(fars):
    try:
        values = tuple(float(f) for f in fars)
    except (TypeError, ValueError) as e:
        raise bad_value("fars", fars, "a sequence of rates in (0, 1)") from e
    if not all(0.0 < f < 1.0 for f in values):
        raise bad_value("fars", fars, "a sequence of rates in (0, 1)")
    return values


def best_threshold(scores, issame, thresholds):
    """(threshold, accuracy): the middle point of the lowest run of consecutive points of the
    sorted grid `thresholds` that maximise the accuracy of "same iff score > threshold" on
    `scores` / `issame` (module docstring)."""
    pos = np.sort(scores[issame])
    neg = np.sort(scores[~issame])
    # Positives above t, plus negatives at or below t, for every t of the grid at once.
    correct = (len(pos) - np.searchsorted(pos, thresholds, side="right")) + np.searchsorted(
        neg, thresholds, side="right")
    first = int(np.argmax(correct))
    below = np.flatnonzero(correct[first:] < correct[first])
    last = first + (int(below[0]) if below.size else len(correct) - first) - 1
    middle = first + (last - first) // 2
    return float(thresholds[middle]), correct[middle] / len(scores)


def tar_at_far(scores, issame, far):
    """TAR at false-accept rate `far` over all pairs (module docstring), or None when
    fewer than 1 / far negative pairs or no positive pair exist."""
    neg = np.sort(scores[~issame])[::-1]
    pos = scores[issame]
    k = math.floor(far * len(neg) + 1e-9)
    if k < 1 or len(pos) == 0:
        return None
    threshold = neg[k]
    return float(np.mean(pos > threshold))


def kfold_accuracy(embeddings1, embeddings2, issame, *, nfolds=NFOLDS, thresholds=None, fars=DEFAULT_FARS):
    """The verification protocol (module docstring) on the pairs (embeddings1[i], embeddings2[i]).

    Embeddings need not be normalised (the score is their cosine). `issame`:
    a boolean per pair. `thresholds`: the grid of cosine thresholds (default
    `DEFAULT_THRESHOLDS`). `fars`: the false-accept rates of `tar_at_far`.
    Returns a `VerificationResult`.
    """
    nfolds = _check_positive_int("nfolds", nfolds, least=2)
    grid = _check_thresholds(thresholds)
    fars = _check_fars(fars)
    e1, e2, issame = _check_pairs(embeddings1, embeddings2, issame, nfolds)
    scores = np.sum(_l2_normalize(e1) * _l2_normalize(e2), axis=1)

    accuracies, chosen = [], []
    for test in np.array_split(np.arange(len(scores)), nfolds):
        train = np.ones(len(scores), dtype=bool)
        train[test] = False
        threshold, _ = best_threshold(scores[train], issame[train], grid)
        chosen.append(threshold)
        accuracies.append(float(np.mean((scores[test] > threshold) == issame[test])))
    return VerificationResult(
        accuracy_mean=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        fold_accuracies=tuple(accuracies),
        thresholds=tuple(chosen),
        tar_at_far={far: tar_at_far(scores, issame, far) for far in fars},
    )


def evaluate(model, verification_set, *, batch_size=64, flip=True):
    """The `VerificationResult` of the embedding `model` on `verification_set`.

    `verification_set`: any object with ``name``, ``images`` (floats
    [2N, H, W, C] in the model's input normalisation, pairs interleaved:
    images[2i] and images[2i + 1] form pair i, insightface's ``.bin`` layout)
    and ``issame`` (N booleans).
    """
    name = getattr(verification_set, "name", "?")
    images = verification_set.images
    issame = np.asarray(verification_set.issame)
    if issame.ndim != 1 or len(images) != 2 * len(issame):
        raise DataError(f"Verification set {name!r}: {len(images)} images for {issame.size} `issame` flags; "
                        "expected two images per pair (images[2i], images[2i + 1] form pair i).")
    embeddings = embed(model, images, batch_size=batch_size, flip=flip)
    return kfold_accuracy(embeddings[0::2], embeddings[1::2], issame)


def _far_label(far):
    exponent = math.log10(far)
    return f"1e{int(round(exponent))}" if abs(exponent - round(exponent)) < 1e-9 else f"{far:g}"


def results_table(results):
    """A markdown table of {set name: VerificationResult}, Table 5's layout: the accuracy as
    mean ± std in percent, then one column of TAR (percent) per FAR ("n/a" where not computed)."""
    if not results:
        raise ConfigError("`results` is empty: no verification set was evaluated.")
    fars = sorted({far for result in results.values() for far in result.tar_at_far})
    header = ["Set", "Accuracy (%)"] + [f"TAR@FAR={_far_label(far)} (%)" for far in fars]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, result in results.items():
        cells = [str(name), f"{100 * result.accuracy_mean:.2f} ± {100 * result.accuracy_std:.2f}"]
        for far in fars:
            tar = result.tar_at_far.get(far)
            cells.append("n/a" if tar is None else f"{100 * tar:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
