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


class _TensorFlowNoise(logging.Filter):
    """Drops TensorFlow's own INFO records and its unsaved-custom-gradient warning.

    TensorFlow logs through its "tensorflow" logger and, in places (the
    checkpoint saver's "Sharding callback duration"), through absl's logger,
    which bnas_tf's own messages use too: records are told apart by the file
    that emitted them.
    """

    def filter(self, record):
        if _UNSAVED_GRADIENTS in record.getMessage():
            return False
        from_tensorflow = f"{os.sep}tensorflow{os.sep}" in record.pathname
        return not (from_tensorflow and record.levelno < logging.WARNING)


def quiet_tensorflow_logs():
    """Keeps TensorFlow's INFO lines and its unsaved-custom-gradient warning out of the log."""
    from absl import logging as absl_logging

    for logger in (logging.getLogger("tensorflow"), absl_logging.get_absl_logger()):
        if not any(isinstance(f, _TensorFlowNoise) for f in logger.filters):
            logger.addFilter(_TensorFlowNoise())
