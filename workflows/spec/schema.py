"""The JSON Schema of a model spec, published so editors can complete and check spec files.

`retrain models schema` prints it; `examples/model-spec.schema.json` is the committed copy the
examples point at (a test keeps it equal to this function's output). The schema describes the
input a spec file may contain; `ModelSpec` remains the judge (cross-field rules such as "the
backend's settings are required for it" are checked by `retrain models validate`).
"""

from __future__ import annotations

import json
from typing import Any

from workflows.spec.models import ModelSpec

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def spec_json_schema() -> dict[str, Any]:
    schema = ModelSpec.model_json_schema(mode="validation")
    return {
        "$schema": DRAFT,
        "title": "adaptive-retraining model spec",
        "description": (
            "One model: backend and its settings, data, features and label, training, trigger "
            "policy, loop gates and approval, deployment, drift, notifications. Check a file "
            "with `retrain models validate FILE`."
        ),
        **{key: value for key, value in schema.items() if key != "title"},
    }


def spec_json_schema_text() -> str:
    return json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"
