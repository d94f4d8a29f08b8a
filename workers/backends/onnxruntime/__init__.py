"""Backend `onnxruntime`: Whisper exported to ONNX, quantized by ONNX Runtime's tools, run by its sessions."""
