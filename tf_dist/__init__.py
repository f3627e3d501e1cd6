"""TensorFlow trainer: MirroredStrategy on one node, MultiWorkerMirroredStrategy across processes.
Entry: python -m tf_dist.train. Its modules take TensorFlow and Keras from tf_dist.quiet."""
