"""Training identities for `bnas_tf.face.train`: CASIA-WebFace, and digits for the demo.

A `TrainingData` gives one deterministic dataset per epoch (a function of the
seed and the epoch, so that a resumed run sees the data an uninterrupted one
sees), the number of identities and the steps per epoch.

`digits_identities` is the offline demo: scikit-learn's handwritten digits
(shipped with scikit-learn) as a face-recognition problem. The network is
trained on the identities 0 .. ``train_classes - 1`` and verified, as faces
are, on pairs of images of the identities it never saw (``train_classes`` ..
9): same digit or not, by the cosine of the embeddings, 10-fold. Verification
well above 0.5 on unseen identities is what an embedding that generalises
shows (a classifier of the training identities alone would not).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from bnas_tf import data as data_lib
from bnas_tf.errors import ConfigError
from bnas_tf.errors import bad_value
from bnas_tf.face import data as face_data
from bnas_tf.face import pairs as face_pairs

_EPOCH_TAG = 7919  # folded into the seed of each epoch's shuffle
_DEMO_SHIFT = 4  # pixels of the demo's random shifts, the digits' crop padding


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """One deterministic dataset of (float32 images, int32 labels) batches per epoch.

    Attributes:
        num_classes: training identities.
        num_images: training images.
        image_size: side of the square images.
        batch_size: the global batch size.
        epoch_fn: ``epoch -> tf.data.Dataset`` of that epoch's batches.
    """

    num_classes: int
    num_images: int
    image_size: int
    batch_size: int
    epoch_fn: object

    @property
    def steps(self):
        """Full batches per epoch."""
        return self.num_images // self.batch_size

    def epoch(self, epoch):
        """The batches of epoch ``epoch`` (0-based)."""
        return self.epoch_fn(int(epoch))


def from_source(source, *, batch_size, seed, image_size=112):
    """`TrainingData` of CASIA-WebFace (or any identity data) at ``source``.

    ``source`` is what `bnas_tf.face.data.training_dataset` reads: converted
    TFRecords, an identity folder, or an MXNet RecordIO file.
    """
    info = face_data.describe(source)
    if info.num_images < batch_size:
        raise ConfigError(f"{source} has {info.num_images} images, fewer than one batch of {batch_size}: "
                          "lower the batch size.")

    def epoch_fn(epoch):
        return face_data.training_dataset(source, batch_size=batch_size, seed=_epoch_seed(seed, epoch),
                                          image_size=image_size, flip=True, drop_remainder=True)

    return TrainingData(info.num_classes, info.num_images, image_size, batch_size, epoch_fn)


def digits_identities(*, batch_size, seed, train_classes=data_lib.DIGITS_FACES_TRAIN_CLASSES, num_pairs=1000):
    """The demo: (`TrainingData` of digits 0..train_classes-1, `VerificationSet` of the others).

    The verification pairs are drawn (with a fixed seed) from every image of
    the held-out digits, half of the same digit and half of two different
    ones, each of the 10 folds balanced.
    """
    if not 2 <= int(train_classes) <= 8:
        raise bad_value("train_classes", train_classes, "an int in [2, 8] (at least 2 digits held out)")
    if int(num_pairs) < 20 or int(num_pairs) % 20:
        raise bad_value("num_pairs", num_pairs, "a multiple of 20 (10 balanced folds)")
    (x_train, y_train), (x_test, y_test) = data_lib.digits_arrays()
    images, labels = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    seen = y_train < train_classes
    train_images, train_labels = face_data.normalize(x_train[seen]).numpy(), y_train[seen].astype(np.int32)

    def epoch_fn(epoch):
        rng = np.random.RandomState(_epoch_seed(seed, epoch))
        order = rng.permutation(len(train_labels))
        shifted = _random_shifts(train_images[order], rng, _DEMO_SHIFT)
        ds = tf.data.Dataset.from_tensor_slices((shifted, train_labels[order]))
        return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    unseen = np.flatnonzero(labels >= train_classes)
    pairs, issame = _balanced_pairs(labels[unseen], int(num_pairs), seed=12345)
    pair_images = face_data.normalize(images[unseen][pairs.reshape(-1)]).numpy()
    heldout = face_pairs.VerificationSet(name=f"digits_{train_classes}-9", images=pair_images, issame=issame)
    data = TrainingData(int(train_classes), len(train_labels), x_train.shape[1], int(batch_size), epoch_fn)
    if data.steps < 1:
        raise ConfigError(f"The demo has {len(train_labels)} training images, fewer than one batch of {batch_size}.")
    return data, heldout


def _random_shifts(images, rng, shift):
    """Each image moved by up to ``shift`` pixels in each direction, zero (-1 after normalising) filled:
    the pad-and-crop of `bnas_tf.data` (a digit, unlike a face, is not flipped)."""
    n, h, w, _ = images.shape
    padded = np.pad(images, [(0, 0), (shift, shift), (shift, shift), (0, 0)], constant_values=images.min())
    dy, dx = rng.randint(0, 2 * shift + 1, size=(2, n))
    return np.stack([padded[i, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(dy, dx))])


def _balanced_pairs(labels, num_pairs, seed):
    """[num_pairs, 2] indices into ``labels`` and issame, each tenth of the pairs half same, half different."""
    rng = np.random.RandomState(seed)
    classes = np.unique(labels)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    pairs, issame = [], []
    for _ in range(10):
        for same in [True] * (num_pairs // 20) + [False] * (num_pairs // 20):
            if same:
                c = rng.choice(classes)
                pairs.append(rng.choice(members[c], 2, replace=False))
            else:
                a, b = rng.choice(classes, 2, replace=False)
                pairs.append([rng.choice(members[a]), rng.choice(members[b])])
            issame.append(same)
    return np.asarray(pairs, np.int64), np.asarray(issame, bool)


def _epoch_seed(seed, epoch):
    return int(np.random.SeedSequence([int(seed), _EPOCH_TAG, int(epoch)]).generate_state(1)[0])
