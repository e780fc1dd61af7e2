"""What the user sees while a run works: progress bars that suit the output, TensorFlow's noise kept out.

A progress bar redraws itself with carriage returns and ANSI colours; in a
log file (stdout redirected, as on a cluster) those codes are noise, so
`progress_bar` draws only on a terminal and otherwise writes one plain line
per epoch. `quiet_tensorflow_logs` drops TensorFlow's INFO lines (e.g. one
"Sharding callback duration" per checkpoint) and its warning that an
exported SavedModel holds custom gradients it did not save: the exported
models are for inference, where no gradient is asked for.
"""

import logging
import os

import keras

_UNSAVED_GRADIENTS = "unsaved custom gradients"


def interactive():
    """Whether stdout is a terminal."""
    try:
        return os.isatty(1)
    except (OSError, ValueError):
        return False


def progress_bar(steps, metrics):
    """A `keras.utils.Progbar` for `steps` steps: redrawn on a terminal, one plain line per epoch otherwise."""
    return keras.utils.Progbar(steps, stateful_metrics=list(metrics), verbose=1 if interactive() else 2)


class _DropUnsavedGradientWarning(logging.Filter):
    def filter(self, record):
        return _UNSAVED_GRADIENTS not in record.getMessage()


def quiet_tensorflow_logs():
    """TensorFlow's Python logger at WARNING, without the unsaved-custom-gradient warning."""
    logger = logging.getLogger("tensorflow")
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropUnsavedGradientWarning) for f in logger.filters):
        logger.addFilter(_DropUnsavedGradientWarning())
