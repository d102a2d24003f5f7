"""Export of trained models (export.py): ONNX, TorchScript and torch.export files that carry their preprocessing,
classes and versions, checked against the PyTorch model."""
