"""`portside validate [PATH] [--format text|json]`: check the desired state, write nothing.

Exit 0 when the repo is valid, 1 when it is not. Text output is one ``file:line:col: message``
line per problem (file names relative to PATH), so editors and CI annotate the right line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reconciler.desired.loader import load_documents, repo_directory
from reconciler.desired.validate import repo_warnings, validate_documents

DESCRIPTION = """\
Load every *.yaml/*.yml file below PATH, check each document against its kind and the repo as a
whole, and report every problem as file:line:col. Nothing is planned or written.

The repo may hold other manifests too: documents of other API groups (Deployments, ...) and YAML
that is not a manifest (Helm values) are skipped and counted; dot-files and dot-directories (.git,
.github) and Helm charts (directories holding a Chart.yaml) are never read; paths listed in
PATH/.portsideignore (gitignore syntax) are left out. Warnings (a MetalLB kind portside does not
support, a route to a Service nothing in the repo exposes) are shown but leave the repo valid.

exit status: 0 valid, 1 invalid
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("path", nargs="?", default=".", metavar="PATH",
                        help="the desired-state repo (a directory or one file; default: .)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: one file:line:col line per problem; json: a single JSON object")


def run(args: argparse.Namespace) -> int:
    result = load_documents(Path(args.path))
    found = [*result.diagnostics, *validate_documents(result.documents, result.invalid_names)]
    directory = str(repo_directory(Path(args.path)))
    diagnostics = sorted(d.under(directory) for d in found)
    warnings = sorted(d.under(directory) for d in repo_warnings(result))
    valid = not diagnostics
    skipped = result.skipped_summary()
    if args.format == "json":
        report = {"valid": valid, "errors": [d.as_dict() for d in diagnostics],
                  "warnings": [d.as_dict() for d in warnings], "documents": result.document_count,
                  "skipped": {"otherKinds": result.skipped["otherKinds"],
                              "notManifests": result.skipped["notManifests"],
                              "unsupportedKinds": result.skipped["unsupportedKinds"],
                              "empty": result.empty, "ignoredPaths": result.ignored,
                              "helmCharts": result.helm_charts},
                  "skippedSummary": skipped}
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for level, found_here in (("", diagnostics), ("warning: ", warnings)):
            for diagnostic in found_here:
                where = f"{diagnostic.file}:{diagnostic.line}:{diagnostic.col}"
                field = f"{diagnostic.path}: " if diagnostic.path else ""
                print(f"{where}: {level}{field}{diagnostic.message}")
        tail = f"; {skipped}" if skipped else ""
        if valid:
            print(f"{args.path}: {result.document_count} document(s) in {result.files} file(s), valid{tail}")
        else:
            print(f"{args.path}: {len(diagnostics)} error(s){tail}", file=sys.stderr)
    return 0 if valid else 1
