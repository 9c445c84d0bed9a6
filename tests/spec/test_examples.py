"""The example specs in examples/ (one per backend) and the spec file formats.

Every example must validate as a `ModelSpec` and against the published JSON Schema; every
registered backend must have one; the committed schema must be what `retrain models schema`
prints; each format's parse error must be that parser's, under that format's name.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # type: ignore[import-untyped, unused-ignore]
import pytest

from activities.specs import SPEC_FORMATS, SpecError, parse_spec_text, read_spec_file
from workflows.spec.backends import BACKEND_NAMES
from workflows.spec.models import ModelSpec
from workflows.spec.schema import spec_json_schema, spec_json_schema_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SPECS = sorted(
    path
    for path in EXAMPLES.rglob("*")
    if path.suffix in SPEC_FORMATS and path.name != "model-spec.schema.json"
)
MINIMAL = {
    "name": "churn",
    "label": "churned",
    "features": [{"name": "tenure"}],
    "data": {"labelled": "l", "baseline_holdout": "b.parquet", "golden_set": "g.parquet"},
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = spec_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_every_registered_backend_has_an_example():
    backends = {read_spec_file(path).backend for path in SPECS}
    assert backends == set(BACKEND_NAMES), "add examples/<backend>/ for a new backend"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_each_example_is_a_valid_spec_and_passes_the_schema(path: Path, validator):
    spec = read_spec_file(path)
    assert spec.backend == path.parent.name
    raw = parse_spec_text(path.read_text(), SPEC_FORMATS[path.suffix])
    assert list(validator.iter_errors(raw)) == []
    # Commented and complete: every top-level section of a spec is written out.
    written = set(raw)
    assert {"name", "backend", "features", "label", "data", "training"} <= written
    assert {"trigger_policy", "loop", "notifications"} <= written
    assert path.read_text().count("#") >= 10
    schema_line = path.read_text().splitlines()[0]
    assert "../model-spec.schema.json" in schema_line


def test_the_local_example_runs_without_anything_else():
    """Its data are what `retrain models example-data credit` writes, and it needs no
    endpoint process (the first deployment moves the registry's alias)."""
    from starters.demo.synthetic import synthetic_spec

    spec = read_spec_file(EXAMPLES / "local" / "credit.yaml")
    generated = synthetic_spec(spec.name)
    assert spec.features == generated.features
    assert (spec.label, spec.segment_column) == (generated.label, generated.segment_column)
    assert spec.data == generated.data
    assert spec.loop.deployment.mode == "all_at_once"


def test_the_committed_schema_is_current():
    committed = (EXAMPLES / "model-spec.schema.json").read_text()
    assert committed == spec_json_schema_text(), "regenerate: retrain models schema -o ..."


def test_the_schema_refuses_what_the_model_refuses(validator):
    assert list(validator.iter_errors(MINIMAL)) == []
    for bad in (
        {**MINIMAL, "colour": "blue"},  # unknown field
        {**MINIMAL, "backend": "azureml"},  # not a registered backend
        {**MINIMAL, "trigger_policy": {"cooldown": "soon"}},  # not a duration
        {**MINIMAL, "features": []},
    ):
        assert list(validator.iter_errors(bad)), bad
        with pytest.raises(ValueError):
            ModelSpec.model_validate(bad)
    # Durations the model accepts, the schema accepts.
    for duration in ("90s", "1h30m", "2d", "PT6H", 3600, "3600"):
        assert list(validator.iter_errors({**MINIMAL, "training": {"timeout": duration}})) == []
        ModelSpec.model_validate({**MINIMAL, "training": {"timeout": duration}})


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_same_spec_reads_alike_in_yaml_toml_and_json(tmp_path: Path):
    yaml_text = (
        "name: churn\nlabel: churned\nfeatures:\n  - name: tenure\n"
        "data:\n  labelled: l\n  baseline_holdout: b.parquet\n  golden_set: g.parquet\n"
        "trigger_policy:\n  cooldown: 2h\n"
    )
    toml_text = (
        'name = "churn"\nlabel = "churned"\nfeatures = [{ name = "tenure" }]\n'
        '[data]\nlabelled = "l"\nbaseline_holdout = "b.parquet"\ngolden_set = "g.parquet"\n'
        '[trigger_policy]\ncooldown = "2h"\n'
    )
    json_text = json.dumps({**MINIMAL, "trigger_policy": {"cooldown": "2h"}})
    specs = [
        read_spec_file(_write(tmp_path, "churn.yaml", yaml_text)),
        read_spec_file(_write(tmp_path, "churn.yml", yaml_text)),
        read_spec_file(_write(tmp_path, "churn.toml", toml_text)),
        read_spec_file(_write(tmp_path, "churn.json", json_text)),
    ]
    assert len({spec.content_hash() for spec in specs}) == 1


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        # The case: a YAML file was handed to the JSON parser.
        (
            "churn.yaml",
            "name: churn\nfeatures:\n  - name: a\n   - name: b\n",
            "churn.yaml is not valid YAML: line 4, column 4: expected <block end>",
        ),
        ("churn.yaml", "name: a\nname: b\n", "churn.yaml is not valid YAML: line 2, column 1:"),
        (
            "churn.toml",
            'name = "a"\nname = "b"\n',
            "churn.toml is not valid TOML: Cannot overwrite",
        ),
        ("churn.json", "{'name': 1}", "churn.json is not valid JSON: Expecting property name"),
        ("churn.txt", "name: a", "unknown spec format '.txt': name the file .yaml, .yml"),
        ("churn.yaml", "- name: a\n", "a spec is a mapping of fields at the top level, got a list"),
        ("churn.yaml", "# nothing yet\n", "at the top level, got nothing"),
    ],
)
def test_parse_errors_name_the_parser_that_failed(tmp_path: Path, name, text, expected):
    with pytest.raises(SpecError) as caught:
        read_spec_file(_write(tmp_path, name, text))
    assert expected in str(caught.value)
    assert caught.value.problems == []


def test_duplicate_yaml_keys_are_refused_not_silently_merged(tmp_path: Path):
    text = "name: churn\nloop:\n  approval: {always: true}\nloop:\n  window: {days: 7}\n"
    with pytest.raises(SpecError, match="duplicate key 'loop'"):
        read_spec_file(_write(tmp_path, "churn.yaml", text))


def test_validation_problems_are_listed_one_by_one(tmp_path: Path):
    text = "name: churn\nlabel: y\nfeatures: []\ndata: {labelled: x}\n"
    with pytest.raises(SpecError) as caught:
        read_spec_file(_write(tmp_path, "churn.yaml", text))
    assert caught.value.headline.endswith("churn.yaml: invalid model spec")
    assert caught.value.problems == [
        "features: List should have at least 1 item after validation, not 0",
        "data.baseline_holdout: Field required",
        "data.golden_set: Field required",
    ]
