"""User-facing errors.

Anything the user can fix (a bad flag, an unknown dataset, a malformed
genotype, missing data, a corrupt checkpoint) raises ``BnasError`` or a
subclass. Its message names the problem and what to do about it;
``bnas_tf.launch`` prints it without a traceback and exits with status 2.
"""


class BnasError(Exception):
    """An error the user can fix; the message says how."""


class ConfigError(BnasError, ValueError):
    """A bad argument or flag value."""


class GenotypeError(BnasError, ValueError):
    """A malformed or invalid genotype."""


class DataError(BnasError):
    """Missing or unusable data."""


class StateError(BnasError):
    """A corrupt or incompatible checkpoint, oracle file or model directory."""


class TrainingError(BnasError):
    """Training diverged (NaN or Inf loss); the last good state is kept."""


def bad_value(name, value, expected):
    """Returns a ConfigError in the Keras style: '... Received: name=value'."""
    return ConfigError(f"Invalid `{name}`: expected {expected}. Received: {name}={value!r}")
