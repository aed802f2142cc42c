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
from reconciler.desired.validate import validate_documents

DESCRIPTION = """\
Load every *.yaml/*.yml file below PATH (dot-files and dot-directories such as .git and .github
are skipped), check each document against its kind and the repo as a whole, and report every
problem as file:line:col. Nothing is planned or written.

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
    valid = not diagnostics
    if args.format == "json":
        report = {"valid": valid, "errors": [d.as_dict() for d in diagnostics],
                  "documents": result.document_count}
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for diagnostic in diagnostics:
            where = f"{diagnostic.file}:{diagnostic.line}:{diagnostic.col}"
            print(f"{where}: {diagnostic.path}: {diagnostic.message}" if diagnostic.path
                  else f"{where}: {diagnostic.message}")
        if valid:
            print(f"{args.path}: {result.document_count} document(s) in {result.files} file(s), valid")
        else:
            print(f"{args.path}: {len(diagnostics)} error(s)", file=sys.stderr)
    return 0 if valid else 1

