"""Binary depthwise kernels stored in 8 bits in a TFLite flatbuffer, exactly.

Larq Compute Engine bit-packs binary 1x1 and full convolutions (`LceBconv2d`)
but has no binary depthwise kernel: a binarized depthwise convolution stays a
float32 `DEPTHWISE_CONV_2D`, and in a BNAS cell those kernels are about half
of the LCE file (BUILD.md, "Binary model size"). Their values are binary:
each output channel c holds only +-a_c (Eq. 1: sign(X) * A_hat, or XNOR's
per-channel mean |X|), and 0 where a weight is exactly 0. So

    w[..., c] = q[..., c] * a_c,    q in {-1, 0, 1} (int8)

holds exactly, and `pack_binary_depthwise` stores q as an int8 tensor with
per-channel quantization (scale a_c, zero point 0, quantized dimension 3)
feeding a `DEQUANTIZE` op whose output is the float kernel the depthwise
convolution reads. TFLite computes the DEQUANTIZE of a constant once, when
the interpreter prepares the model: inference runs the same float kernel on
the same float kernel values, and the file stores 1 byte per weight instead
of 4. Kernels that are not binary (a float network's) are left as they are.
"""

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

_DEQUANTIZE_VERSION = 5  # int8 with per-channel quantization (TFLite's op_version for DEQUANTIZE)


def _builtin_code(code):
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _binary_levels(kernel):
    """(q, scale) when every channel of `kernel` [1, H, W, C] is in {-a_c, 0, a_c}; else None."""
    magnitude = np.abs(kernel).reshape(-1, kernel.shape[-1])
    scale = magnitude.max(axis=0)
    if not np.all((magnitude == 0) | (magnitude == scale)):
        return None
    q = np.sign(kernel).astype(np.int8)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero channel: q = 0, any scale
    if not np.array_equal(q.astype(np.float32) * safe, kernel):
        return None
    return q, safe


def _opcode_index(model, builtin, version):
    for i, code in enumerate(model.operatorCodes):
        if _builtin_code(code) == builtin and not code.customCode:
            code.version = max(code.version, version)
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def pack_binary_depthwise(flatbuffer):
    """Returns (flatbuffer, number of kernels packed); see the module docstring."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    depthwise = {
        i for i, code in enumerate(model.operatorCodes)
        if _builtin_code(code) == schema.BuiltinOperator.DEPTHWISE_CONV_2D and not code.customCode
    }
    packed = 0
    for subgraph in model.subgraphs:
        kernels = {op.inputs[1] for op in subgraph.operators if op.opcodeIndex in depthwise}
        readers = {}
        for op in subgraph.operators:
            for t in op.inputs:
                readers[t] = readers.get(t, 0) + 1
        users = {}
        for sg in model.subgraphs:
            for tensor in sg.tensors:
                users[tensor.buffer] = users.get(tensor.buffer, 0) + 1
        dequantize_ops = []
        for index in sorted(kernels):
            tensor = subgraph.tensors[index]
            buffer = model.buffers[tensor.buffer]
            if tensor.type != schema.TensorType.FLOAT32 or buffer.data is None or len(buffer.data) == 0:
                continue
            if users[tensor.buffer] != 1 or readers[index] != 1:
                continue  # shared with another tensor or op: left as it is
            kernel = np.frombuffer(bytes(bytearray(buffer.data)), np.float32).reshape(tensor.shape)
            levels = _binary_levels(kernel)
            if levels is None:
                continue
            q, scale = levels
            stored = schema.BufferT()
            stored.data = np.frombuffer(q.tobytes(), np.uint8)
            model.buffers.append(stored)
            quantized = schema.TensorT()
            quantized.shape = list(tensor.shape)
            quantized.type = schema.TensorType.INT8
            quantized.buffer = len(model.buffers) - 1
            quantized.name = (tensor.name or b"kernel") + b"/int8"
            quantized.quantization = schema.QuantizationParametersT()
            quantized.quantization.scale = [float(s) for s in scale]
            quantized.quantization.zeroPoint = [0] * len(scale)
            quantized.quantization.quantizedDimension = len(tensor.shape) - 1
            subgraph.tensors.append(quantized)
            buffer.data = None  # the float kernel is now computed, by the DEQUANTIZE below
            op = schema.OperatorT()
            op.opcodeIndex = _opcode_index(model, schema.BuiltinOperator.DEQUANTIZE, _DEQUANTIZE_VERSION)
            op.inputs = [len(subgraph.tensors) - 1]
            op.outputs = [index]
            dequantize_ops.append(op)
            packed += 1
        subgraph.operators = dequantize_ops + list(subgraph.operators)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), packed
