"""Slims the production image's Python environment (run by the Dockerfile's builder, with the
image's own interpreter, after every package is installed with `pip install --no-compile`).

1. Removes what production never loads: the libraries' test suites, the sources and headers
   wheels ship for building against them (Cython, C/C++, Rust, type stubs), the parts of
   pyarrow we never import (Arrow Flight, its S3 filesystem: our clouds' data goes through
   boto3 and the Google and Azure SDKs; `pyarrow.fs` imports without them), and the packages
   of UNUSED_PACKAGES: most of google-cloud-aiplatform (the Vertex backend uses only its GAPIC
   v1 clients) and what only the rest of it needs. Should one of our modules import such a
   package, the build fails.
2. Compiles byte code for what the image's commands import, and only that: every module of our
   packages is imported once, so each library module they reach is compiled; the rest of the
   libraries (most of SciPy, SQLAlchemy's dialects, ...) stays source only. Without byte code
   every `retrain` command would compile its imports again; with all of it the environment
   carries 100+ MB of byte code nobody loads.

    /opt/retrain/bin/python ops/image/slim.py /opt/retrain/lib/python3.11/site-packages

Only the standard library: it runs before anything of ours is importable by design.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import pkgutil
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

# Our packages: importing each of their modules compiles what the image's commands load.
OUR_PACKAGES = ("workflows", "activities", "workers", "starters", "serving")
# Imported inside functions (on first use) rather than at module level: compiled too.
LAZY_IMPORTS = (
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.metrics",
    "mlflow.sklearn",
    "pyarrow.parquet",
    "scipy.stats",
    "river.drift",
)

# The libraries' test suites, wherever they are below a package (not a top-level `tests`).
TEST_DIRS = ("tests",)
# Files removed anywhere: build inputs and type stubs, never read at run time.
BUILD_ONLY_FILES = ("*.pyx", "*.pxd", "*.pxi", "*.h", "*.hpp", "*.c", "*.cc", "*.cpp", "*.pyi")
# Paths relative to site-packages (globs) that production never loads.
UNUSED = (
    "pyarrow/include",
    "pyarrow/src",
    "pyarrow/libarrow_flight.so*",
    "pyarrow/libarrow_python_flight.so*",
    "pyarrow/_flight.*.so",
    "pyarrow/flight.py",
    "pyarrow/libarrow_s3.so*",
    "pyarrow/_s3fs.*.so",
    "pyarrow/_pyarrow_cpp_tests.*.so",
    "numpy/_core/include",
    # The Rust sources of the SDK's core, shipped beside the compiled bridge.
    "temporalio/bridge/sdk-core",
    "temporalio/bridge/src",
    # Vertex's async REST transports need google-cloud-aiplatform's `async_rest` extra
    # (aiohttp), which nothing installs: the clients' guarded imports of them always fail.
    "google/cloud/aiplatform_v1/services/*/transports/rest_asyncio.py",
)
# Whole packages (dotted names) that nothing of ours imports, though a distribution we need
# brings them: removed like UNUSED, and `warm` fails if one of our modules imports one.
# google-cloud-aiplatform's: the Vertex backend uses only its GAPIC v1 clients
# (google.cloud.aiplatform_v1), which import none of these (tests/gcp/test_vertex_imports.py).
UNUSED_PACKAGES = (
    "google.cloud.aiplatform",  # the high-level SDK: importing it loads all of v1beta1
    "google.cloud.aiplatform_v1beta1",  # the preview API, for the high-level SDK
    "vertexai",  # the generative AI SDK
    "agentplatform",  # the Agent Platform SDK, vertexai's successor
    "vertex_ray",  # Ray on Vertex
    "google.genai",  # google-genai, the Gemini client of vertexai and agentplatform
    # google-cloud-resource-manager: the high-level SDK's and agentplatform's project lookups
    "google.cloud.resourcemanager",
    "google.cloud.resourcemanager_v3",
)


def removable(site: Path) -> list[Path]:
    """Every path `prune` removes, sorted (a directory's contents are not listed apart)."""
    found: set[Path] = set()
    for pattern in (*UNUSED, *(name.replace(".", "/") for name in UNUSED_PACKAGES)):
        found.update(site.glob(pattern))
    for path in site.rglob("*"):
        if path.is_dir():
            test_suite = path.name in TEST_DIRS and len(path.relative_to(site).parts) >= 2
            # Byte code is compiled again by `warm`, only for what is imported.
            if test_suite or path.name == "__pycache__":
                found.add(path)
        elif any(fnmatch.fnmatch(path.name, pattern) for pattern in BUILD_ONLY_FILES):
            found.add(path)
    return sorted(p for p in found if not any(parent in found for parent in p.parents))


def prune(site: Path) -> int:
    """Remove what production never loads; returns the bytes freed."""
    freed = 0
    for path in removable(site):
        if path.is_dir() and not path.is_symlink():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        else:
            freed += path.lstat().st_size
            path.unlink()
    return freed


def warm(
    packages: Iterable[str] = OUR_PACKAGES,
    lazy: Iterable[str] = LAZY_IMPORTS,
    removed: Iterable[str] = UNUSED_PACKAGES,
) -> list[str]:
    """Import every module of `packages` (and `lazy`), writing byte code as they load.

    A module needing a library the image's extras do not install (`activities.gcp` in an
    AWS-only image) is skipped and returned; any other failure fails the build, and so does a
    module needing one of the `removed` packages."""
    was, sys.dont_write_bytecode = sys.dont_write_bytecode, False
    try:
        return _import_all(list(packages), list(lazy), list(removed))
    finally:
        sys.dont_write_bytecode = was


def _import_all(packages: list[str], lazy: list[str], removed: list[str]) -> list[str]:
    skipped: list[str] = []
    names = list(lazy)
    for package in packages:
        module = importlib.import_module(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, f"{package}.")]
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            missing = (err.name or "").partition(".")[0]
            if not missing or missing in packages:
                raise
            if any(f"{err.name}.".startswith(f"{package}.") for package in removed):
                raise ModuleNotFoundError(
                    f"{name} imports {err.name}, which slim.py removes (UNUSED_PACKAGES)",
                    name=err.name,
                ) from err
            skipped.append(f"{name} (needs {err.name})")
    return skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site_packages", type=Path)
    args = parser.parse_args(argv)
    freed = prune(args.site_packages)
    skipped = warm()
    print(f"slim: removed {freed / 2**20:.0f} MB never loaded; byte code for what is imported")
    for line in skipped:
        print(f"slim: not in this image's extras: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
