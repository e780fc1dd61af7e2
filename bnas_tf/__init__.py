"""bnas_tf: Binarized Neural Architecture Search for Keras 3 / TensorFlow.

Importing the package registers its Keras objects (layers, blocks, quantizers,
constraints, the `Quant*` layers, `InferenceModel`, the face heads) under the
package name `bnas_tf`, so that `import bnas_tf` is all that `keras.models.load_model` needs
to read a model that bnas_tf saved, in safe mode. It therefore loads Keras and TensorFlow.
"""

from bnas_tf import network as _network  # noqa: F401  (imports every module that registers objects)
from bnas_tf import quant as _quant  # noqa: F401  (the Larq-shaped Quant* layers, WeightClip)
from bnas_tf.face import heads as _face_heads  # noqa: F401  (the face margin heads)

__version__ = "0.1.0"
