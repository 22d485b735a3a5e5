"""Exporters (ONNX, OpenVINO IR, TensorRT) and parity checks."""
