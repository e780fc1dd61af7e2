"""Helper of the tests that read TensorFlow's Python log."""

import logging

import tensorflow as tf


def tensorflow_log(run):
    """The messages TensorFlow's Python logger emits while `run()` runs."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    tf.get_logger().addHandler(handler)
    try:
        run()
    finally:
        tf.get_logger().removeHandler(handler)
    return messages
