"""The image's slimming step (ops/image/slim.py): what it removes, what it keeps, and the byte
code it compiles only for what our packages import. The Dockerfile runs it on the real
environment and then imports what every role needs; these tests pin its rules on small trees."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_slim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_slim", ROOT / "ops/image/slim.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


slim = load_slim()


def touch(root: Path, *paths: str) -> None:
    for relative in paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)


KEPT = (
    "pyarrow/__init__.py",
    "pyarrow/parquet/core.py",
    "pyarrow/fs.py",
    "pyarrow/libarrow.so.2600",
    "pyarrow/libparquet.so.2600",
    "pyarrow/_parquet.cpython-311-x86_64-linux-gnu.so",
    "pyarrow/LICENSE.txt",
    "temporalio/bridge/temporal_sdk_bridge.abi3.so",
    "temporalio/bridge/worker.py",
    "scipy/stats/_stats_py.py",
    "tests/conftest.py",  # a top-level package named tests is not a library's test suite
    "numpy/testing/__init__.py",
    # The Vertex backend's GAPIC v1 clients stay, beside the high-level SDK's removed packages.
    "google/cloud/aiplatform_v1/__init__.py",
    "google/cloud/aiplatform_v1/services/model_service/client.py",
    "google/cloud/aiplatform_v1/services/model_service/transports/rest.py",
    "google/cloud/storage/client.py",
    "google/api_core/operations_v1/transports/rest_asyncio.py",
)
REMOVED = (
    "pyarrow/libarrow_flight.so.2600",
    "pyarrow/libarrow_python_flight.so.2600.1.0",
    "pyarrow/_flight.cpython-311-x86_64-linux-gnu.so",
    "pyarrow/flight.py",
    "pyarrow/libarrow_s3.so.2600",
    "pyarrow/_s3fs.cpython-311-x86_64-linux-gnu.so",
    "pyarrow/include/arrow/api.h",
    "pyarrow/lib.pyx",
    "pyarrow/tests/test_table.py",
    "scipy/stats/tests/test_stats.py",
    "scipy/special/cython_special.pxd",
    "numpy/_core/include/numpy/ndarrayobject.h",
    "pandas/_libs/lib.pyi",
    "temporalio/bridge/sdk-core/crates/core/src/lib.rs",
    "temporalio/bridge/src/lib.rs",
    "scipy/stats/__pycache__/_stats_py.cpython-311.pyc",
    "google/cloud/aiplatform/__init__.py",
    "google/cloud/aiplatform/models.py",
    "google/cloud/aiplatform_v1beta1/__init__.py",
    "google/cloud/aiplatform_v1beta1/services/model_service/client.py",
    "vertexai/__init__.py",
    "vertexai/generative_models/_generative_models.py",
    "agentplatform/__init__.py",
    "vertex_ray/__init__.py",
    "google/genai/models.py",
    "google/cloud/resourcemanager/__init__.py",
    "google/cloud/resourcemanager_v3/services/projects/client.py",
    "google/cloud/aiplatform_v1/services/model_service/transports/rest_asyncio.py",
)


def test_prune_removes_what_production_never_loads_and_keeps_the_rest(tmp_path: Path) -> None:
    touch(tmp_path, *KEPT, *REMOVED)

    freed = slim.prune(tmp_path)

    assert [p for p in KEPT if not (tmp_path / p).exists()] == []
    assert [p for p in REMOVED if (tmp_path / p).exists()] == []
    assert freed == 100 * len(REMOVED)
    assert slim.removable(tmp_path) == []


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[Path]:
    """Two small packages on sys.path: `ours` (with a module needing a library this image
    lacks) and `lib`, which `ours` imports."""
    touch(tmp_path, "lib/__init__.py", "lib/unused.py")
    (tmp_path / "lib/__init__.py").write_text("VALUE = 1\n")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours/__init__.py").write_text("")
    (tmp_path / "ours/core.py").write_text("import lib\n")
    (tmp_path / "ours/cloud.py").write_text("import not_in_this_image_sdk\n")
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] in {"ours", "lib"}]:
        del sys.modules[name]


def test_warm_compiles_what_our_packages_import_and_only_that(packages: Path) -> None:
    skipped = slim.warm(packages=("ours",), lazy=())

    assert skipped == ["ours.cloud (needs not_in_this_image_sdk)"]
    assert list((packages / "lib/__pycache__").glob("__init__.*.pyc"))
    assert list((packages / "ours/__pycache__").glob("core.*.pyc"))
    assert not list((packages / "lib/__pycache__").glob("unused.*.pyc"))


def test_warm_fails_when_one_of_our_modules_imports_a_removed_package(packages: Path) -> None:
    """A package removed as unused is not a missing extra: importing it is a broken image."""
    with pytest.raises(ModuleNotFoundError, match=r"ours\.cloud imports not_in_this_image_sdk"):
        slim.warm(packages=("ours",), lazy=(), removed=("not_in_this_image_sdk",))
    # A package is matched whole: a name it merely starts with is another package.
    assert slim.warm(packages=("ours",), lazy=(), removed=("not_in_this_image",)) == [
        "ours.cloud (needs not_in_this_image_sdk)"
    ]
    # A removed subpackage of an installed library (google.cloud.aiplatform in google.cloud).
    (packages / "ours/cloud.py").write_text("import lib.removed.models\n")
    with pytest.raises(ModuleNotFoundError, match=r"imports lib\.removed, which slim.py removes"):
        slim.warm(packages=("ours",), lazy=(), removed=("lib.removed",))


def test_warm_fails_when_one_of_our_own_modules_is_missing(packages: Path) -> None:
    (packages / "ours/broken.py").write_text("import ours.gone\n")
    with pytest.raises(ModuleNotFoundError, match=r"ours\.gone"):
        slim.warm(packages=("ours",), lazy=())
