"""Backend `openvino`: Whisper converted by OpenVINO, weights compressed by NNCF, run by OpenVINO's CPU plugin."""
