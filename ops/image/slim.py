"""Slims the production image's Python environment (run by the Dockerfile's builder, with the
image's own interpreter, after every package is installed with `pip install --no-compile`).

1. Removes what production never loads: the libraries' test suites, the sources and headers
   wheels ship for building against them (Cython, C/C++, Rust, type stubs), the parts of
   pyarrow we never import (Arrow Flight, its S3 filesystem: our clouds' data goes through
   boto3 and the Google and Azure SDKs; `pyarrow.fs` imports without them), and the packages
   of UNUSED_PACKAGES: most of google-cloud-aiplatform (the Vertex backend uses only its GAPIC
   v1 clients) and what only the rest of it needs. Should one of our modules import such a
   package, the build fails.
2. Strips the symbol tables (and debug information) from the shared libraries, as Debian
   does for its own packages: many wheels ship them unstripped (the SDK's Rust bridge, Arrow,
   cryptography; 55 MB of a Vertex image). Kept as they are: the libraries auditwheel vendors in
   `<distribution>.libs/`, which patchelf rewrote and `strip` breaks ("ELF load command
   address/offset not page-aligned"). Every stripped library is loaded again afterwards; one
   that loaded before and does not now fails the build. Needs binutils' `strip` (the builder
   installs it; the final image does not carry it).
3. Keeps botocore's service models (one folder per AWS service, about 460, 23 MB) only for
   the services the AWS backend calls (`activities.aws.clients.SERVICES`) and those botocore's
   credential chain calls itself (BOTOCORE_SERVICES); a client of each is built afterwards.
4. Turns identical copies of a shared library into symbolic links to one of them: wheels cannot
   hold links, so pyarrow ships libarrow_python three times and numpy and scipy each vendor the
   same libgfortran.
5. Compiles byte code for what the image's commands import, and only that: every module of our
   packages is imported once, so each library module they reach is compiled; the rest of the
   libraries (most of SciPy, SQLAlchemy's dialects, ...) stays source only. Without byte code
   every `retrain` command would compile its imports again; with all of it the environment
   carries 100+ MB of byte code nobody loads.
6. Ships the generated code of SOURCELESS as byte code alone: Vertex's GAPIC v1 package imports
   all its services' clients and message types (about 24 MB of generated source beside as much
   byte code) though the backend uses four. Its modules that were imported keep only their byte
   code, moved where Python loads it without a source; a traceback through them has no source
   lines, which generated code seldom needs.

    /opt/retrain/bin/python ops/image/slim.py /opt/retrain/lib/python3.11/site-packages

Only the standard library: the tests load it by path. It reads one constant of ours
(`activities.aws.clients.SERVICES`), when the image carries the AWS backend.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib
import json
import os
import pkgutil
import shutil
import subprocess
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


# `--strip-unneeded`: what dynamic linking needs stays, so every library still loads.
STRIP = ("strip", "--strip-unneeded")
# Loads each library named on stdin (a JSON list), saying which before it tries (a library
# broken badly enough crashes the loader) and which failed, with the error.
_LOAD_EACH = """
import ctypes, json, os, sys
for path in json.load(sys.stdin):
    print(json.dumps({"loading": path}), flush=True)
    try:
        ctypes.CDLL(path, mode=os.RTLD_LOCAL)
    except OSError as error:
        print(json.dumps({"failed": path, "error": str(error)}), flush=True)
"""


class StripBroke(RuntimeError):
    """A shared library loaded before `strip` and does not after it."""


def strippable(site: Path) -> list[Path]:
    """The shared libraries `strip_symbols` strips: regular files (a symlink's target is
    stripped once), not below an auditwheel `*.libs` directory."""
    found = [
        path
        for pattern in ("*.so", "*.so.*")
        for path in site.rglob(pattern)
        if path.is_file() and not path.is_symlink()
    ]
    vendored = [
        p for p in found if any(part.endswith(".libs") for part in p.relative_to(site).parts)
    ]
    return sorted(set(found) - set(vendored))


def unloadable(libraries: list[Path]) -> dict[str, str]:
    """The libraries a fresh interpreter cannot load (dlopen), with the loader's error. One
    that crashes the loader raises StripBroke."""
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_EACH],
        input=json.dumps([str(path) for path in libraries]),
        capture_output=True,
        text=True,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    if done.returncode != 0:
        crashed = lines[-1].get("loading", "?") if lines else "?"
        raise StripBroke(f"{crashed}: loading it ended the loader (exit {done.returncode})")
    return {line["failed"]: line["error"] for line in lines if "failed" in line}


def strip_symbols(site: Path, strip: tuple[str, ...] = STRIP) -> int:
    """Strip the shared libraries' symbol tables; returns the bytes freed."""
    libraries = strippable(site)
    if not libraries:
        return 0
    if shutil.which(strip[0]) is None:
        raise FileNotFoundError(f"{strip[0]} not found: install binutils in the image's builder")
    failing_before = unloadable(libraries)
    before = sum(path.stat().st_size for path in libraries)
    subprocess.run([*strip, *map(str, libraries)], check=True)
    broken = {p: e for p, e in unloadable(libraries).items() if p not in failing_before}
    if broken:
        lines = "\n".join(f"  {path}: {error}" for path, error in sorted(broken.items()))
        raise StripBroke(f"no longer loads after {' '.join(strip)}:\n{lines}")
    return before - sum(path.stat().st_size for path in libraries)


# Where botocore keeps its service models, and the services its credential chain and token
# providers build clients for (AssumeRole and web identity, SSO, SSO tokens, `aws login`):
# tests/ops/test_image_slim.py reads botocore's source to keep this list whole.
BOTOCORE_DATA = "botocore/data"
BOTOCORE_SERVICES = ("sts", "sso", "sso-oidc", "signin")
# Builds a client of each service named on stdin (a JSON list), offline, as the backend would.
_BUILD_CLIENTS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import botocore.session
session = botocore.session.get_session()
for service in json.load(sys.stdin):
    session.create_client(
        service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
"""


def aws_services() -> tuple[str, ...]:
    """The AWS backend's services and botocore's own."""
    from activities.aws.clients import SERVICES

    return (*SERVICES, *BOTOCORE_SERVICES)


def trim_botocore(site: Path, keep: Iterable[str]) -> int:
    """Remove the models of every AWS service but `keep`; returns the bytes freed."""
    data = site / BOTOCORE_DATA
    if not data.is_dir():
        return 0
    kept = set(keep)
    missing = sorted(name for name in kept if not (data / name).is_dir())
    if missing:
        raise FileNotFoundError(f"botocore has no model of {missing}")
    freed = 0
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and p.name not in kept):
        freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        shutil.rmtree(folder)
    subprocess.run(
        [sys.executable, "-c", _BUILD_CLIENTS, str(site)],
        input=json.dumps(sorted(kept)),
        text=True,
        check=True,
    )
    return freed


def link_identical_libraries(site: Path) -> int:
    """Replace each further copy of a shared library by a relative link to the first (in path
    order); returns the bytes freed."""
    first: dict[tuple[int, str], Path] = {}
    freed = 0
    for path in strippable(site) + sorted(site.rglob("*.libs/*.so*")):
        if path.is_symlink() or not path.is_file():
            continue
        key = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        original = first.setdefault(key, path)
        if original != path:
            freed += path.stat().st_size
            path.unlink()
            path.symlink_to(os.path.relpath(original, path.parent))
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


# Packages (paths relative to site-packages) of generated code shipped as byte code alone.
SOURCELESS = ("google/cloud/aiplatform_v1",)


def make_sourceless(site: Path, packages: Iterable[str] = SOURCELESS) -> int:
    """Replace each compiled module of `packages` by its byte code, where the import system
    loads it without a source (`x.pyc` beside where `x.py` was); returns the bytes freed.
    Modules never imported (no byte code) keep their source."""
    tag = sys.implementation.cache_tag
    freed = 0
    for package in packages:
        for source in sorted((site / package).rglob("*.py")):
            compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
            if compiled.is_file():
                freed += source.stat().st_size
                compiled.replace(source.with_suffix(".pyc"))
                source.unlink()
        if (site / package).is_dir():
            dotted = package.replace("/", ".")
            load = f"import sys; sys.path.insert(0, sys.argv[1]); import {dotted}"
            subprocess.run([sys.executable, "-c", load, str(site)], check=True)
    return freed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site_packages", type=Path)
    args = parser.parse_args(argv)
    freed = prune(args.site_packages)
    stripped = strip_symbols(args.site_packages)
    if (args.site_packages / BOTOCORE_DATA).is_dir():
        freed += trim_botocore(args.site_packages, aws_services())
    linked = link_identical_libraries(args.site_packages)
    skipped = warm()
    sourceless = make_sourceless(args.site_packages)
    print(
        f"slim: removed {freed / 2**20:.0f} MB never loaded, stripped {stripped / 2**20:.0f} MB"
        f" of symbols, linked {linked / 2**20:.0f} MB of copies; byte code for what is imported"
        f" ({sourceless / 2**20:.0f} MB of generated sources replaced by theirs)"
    )
    for line in skipped:
        print(f"slim: not in this image's extras: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
