"""Serving a trained network outside the harness: ``exporter`` writes a checkpoint's network as an
ONNX file with a JSON sidecar and checks it against eager PyTorch; ``runtime`` runs such a file with
ONNX Runtime as the network of a task, for ``predict.py model_file=`` and the bench's serving columns.

Both need the optional ``export`` dependency group (``pip install -e ".[export]"``); nothing else in
the harness imports them, so training and evaluation run without it.
"""
