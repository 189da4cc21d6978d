"""Azure ML scoring script for a headrace bundle: ``init()`` loads the model, ``run()`` answers.

Azure ML mounts the registered model folder under ``AZUREML_MODEL_DIR`` and calls ``init()`` once,
then ``run(raw_data)`` per request with the request body (a JSON string). The body is what
``POST /invocations`` takes: ``{"records": [{...}, ...]}``, ``{"instances": ...}`` or a list.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from headrace.deploy.runtime import BundleModel, load_model_dir
from headrace.deploy.sagemaker import parse_json
from headrace.errors import HeadraceError

model: BundleModel | None = None


def init() -> None:
    global model
    model = load_model_dir()


def run(raw_data: Any) -> dict[str, Any]:
    if model is None:
        init()
    assert model is not None
    try:
        document = json.loads(raw_data) if isinstance(raw_data, str | bytes) else raw_data
        return model.answer(parse_json(document, model.columns))
    except (ValueError, HeadraceError) as exc:
        message = exc.one_line() if isinstance(exc, HeadraceError) else f"the body is not JSON ({exc})"
        return {"error": message}
