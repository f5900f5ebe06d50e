"""Export and inference: the serving graph with in-graph pre- and post-processing
(``graph``), the SavedModel for TF Serving (``saved_model``), TFLite (``tflite``, its client
``tflite_client``, MediaPipe metadata ``tflite_metadata``), BatchNorm folding
(``bn_folding``) and the Python :class:`~fcos_tf.serving.detector.Detector`.
"""
