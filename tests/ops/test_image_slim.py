"""The image's slimming step (ops/image/slim.py): what it removes, what it keeps, and the byte
code it compiles only for what our packages import. The Dockerfile runs it on the real
environment and then imports what every role needs; these tests pin its rules on small trees."""

from __future__ import annotations

import importlib.util
import py_compile
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import botocore
import pytest
import yaml

from activities.aws.clients import SERVICES, AwsClients
from tests.support.helpers import load_script

ROOT = Path(__file__).resolve().parents[2]


slim = load_script("ops/image/slim.py")


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


# A real extension module shipped with its symbol tables (PyYAML's wheel), to strip.
UNSTRIPPED = next(Path(yaml.__file__).parent.glob("_yaml.*.so"))


def test_strip_symbols_shrinks_libraries_and_leaves_auditwheel_ones(tmp_path: Path) -> None:
    ours, vendored = tmp_path / "yaml/_yaml.so", tmp_path / "numpy.libs/libcopy.so.1"
    for path in (ours, vendored):
        path.parent.mkdir(parents=True)
        shutil.copy(UNSTRIPPED, path)
    size = UNSTRIPPED.stat().st_size

    freed = slim.strip_symbols(tmp_path)

    assert 0 < ours.stat().st_size < size and freed == size - ours.stat().st_size
    assert vendored.read_bytes() == UNSTRIPPED.read_bytes()
    assert slim.unloadable([ours]) == {}


def test_a_library_that_no_longer_loads_after_strip_fails_the_build(tmp_path: Path) -> None:
    library = tmp_path / "pkg/_ext.so"
    library.parent.mkdir()
    shutil.copy(UNSTRIPPED, library)
    # A "strip" that breaks what it touches, as `strip` does to patchelf'd libraries.
    with pytest.raises(slim.StripBroke, match=r"pkg/_ext\.so"):
        slim.strip_symbols(tmp_path, strip=("truncate", "--size=4096"))
    with pytest.raises(FileNotFoundError, match="install binutils"):
        slim.strip_symbols(tmp_path, strip=("no-such-strip",))


@pytest.fixture
def botocore_copy(tmp_path: Path) -> Path:
    """A copy of botocore (its models included) in a site of its own."""
    shutil.copytree(Path(botocore.__file__).parent, tmp_path / "botocore")
    return tmp_path


def test_trim_botocore_keeps_the_backends_and_the_credential_chains_services(
    botocore_copy: Path,
) -> None:
    kept = slim.aws_services()
    assert set(SERVICES) <= set(kept)

    freed = slim.trim_botocore(botocore_copy, kept)

    data = botocore_copy / slim.BOTOCORE_DATA
    assert freed > 10 * 2**20
    assert sorted(p.name for p in data.iterdir() if p.is_dir()) == sorted(kept)
    assert (data / "endpoints.json").is_file() and (data / "partitions.json").is_file()
    # Another service's client can no longer be built from that copy.
    build = "import sys; sys.path.insert(0, sys.argv[1]); import botocore.session as s; "
    build += "s.get_session().create_client('sqs', region_name='us-east-1')"
    refused = subprocess.run(
        [sys.executable, "-c", build, str(botocore_copy)], capture_output=True, text=True
    )
    assert "UnknownServiceError" in refused.stderr


def test_trim_botocore_refuses_a_service_botocore_does_not_know(botocore_copy: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-service"):
        slim.trim_botocore(botocore_copy, ("s3", "no-such-service"))
    assert (botocore_copy / slim.BOTOCORE_DATA / "sqs").is_dir()


def test_botocore_services_are_those_botocores_own_code_builds_clients_for() -> None:
    """If a botocore release adds a credential or token provider calling another service, the
    image must keep that service's model: read its source for the clients it builds."""
    package = Path(botocore.__file__).parent
    built: set[str] = set()
    for module in ("credentials.py", "tokens.py", "utils.py"):
        source = (package / module).read_text()
        built |= set(re.findall(r"_client_creator\(\s*['\"]([a-z0-9-]+)['\"]", source))
        built |= set(re.findall(r"create_nested_client\([^,]+,\s*['\"]([a-z0-9-]+)['\"]", source))
    assert built == set(slim.BOTOCORE_SERVICES)


def test_the_aws_backend_builds_clients_of_its_services_only() -> None:
    clients = AwsClients("us-east-1")
    assert clients.client("s3").meta.service_model.service_name == "s3"
    with pytest.raises(ValueError, match="sqs is not one of the backend's services"):
        clients.client("sqs")


def test_identical_libraries_become_links_to_one_copy(tmp_path: Path) -> None:
    touch(tmp_path, "pyarrow/libarrow_python.so", "pyarrow/libarrow_python.so.2500")
    for copy in ("numpy.libs/libgfortran-1.so.5", "scipy.libs/libgfortran-1.so.5"):
        (tmp_path / copy).parent.mkdir()
        (tmp_path / copy).write_bytes(b"g" * 100)
    (tmp_path / "pyarrow/libother.so").write_bytes(b"y" * 100)  # same size, other content

    freed = slim.link_identical_libraries(tmp_path)

    assert freed == 200
    linked = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_symlink()}
    assert linked == {"pyarrow/libarrow_python.so.2500", "scipy.libs/libgfortran-1.so.5"}
    assert (tmp_path / "scipy.libs/libgfortran-1.so.5").read_bytes() == b"g" * 100
    assert not (tmp_path / "pyarrow/libother.so").is_symlink()


def test_make_sourceless_ships_compiled_modules_as_byte_code_alone(tmp_path: Path) -> None:
    package = tmp_path / "gen/api_v1"
    package.mkdir(parents=True)
    (tmp_path / "gen/__init__.py").write_text("")
    (package / "__init__.py").write_text("from gen.api_v1.types import ANSWER\n")
    (package / "types.py").write_text("ANSWER = 42\n")
    (package / "never_imported.py").write_text("ANSWER = 0\n")
    for source in (package / "__init__.py", package / "types.py", tmp_path / "gen/__init__.py"):
        py_compile.compile(str(source), cfile=importlib.util.cache_from_source(str(source)))

    freed = slim.make_sourceless(tmp_path, packages=("gen/api_v1",))

    assert freed == len("from gen.api_v1.types import ANSWER\n") + len("ANSWER = 42\n")
    assert sorted(p.name for p in package.iterdir() if p.is_file()) == [
        "__init__.pyc",
        "never_imported.py",
        "types.pyc",
    ]
    answer = (
        "import sys; sys.path.insert(0, sys.argv[1]); import gen.api_v1; print(gen.api_v1.ANSWER)"
    )
    done = subprocess.run(
        [sys.executable, "-c", answer, str(tmp_path)], capture_output=True, text=True
    )
    assert done.stdout.strip() == "42", done.stderr
