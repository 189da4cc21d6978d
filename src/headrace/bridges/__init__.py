"""Bridges to the rest of a team's ML stack: MLflow (export, import, mirror) and ONNX (export).

Each needs an optional extra (``pip install 'headrace[mlflow]'``, ``'headrace[onnx]'``) and is imported
only when used.
"""

__all__: list[str] = []
