"""bnas_tf: Binarized Neural Architecture Search for Keras 3 / TensorFlow.

Import the submodules you need; this package module stays light so that
``import bnas_tf.genotypes`` does not load TensorFlow.
"""

__version__ = "0.1.0"
