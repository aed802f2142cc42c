"""Whole-process figures of issue 13 at several sizes, optionally beside another git revision.

    python bench/bench_scale.py [--sizes 1000,10000,40000] [--runs 5] [--compare REV] [--phases]

For each size it writes issue 13's repo (bench/scale_repo.py) and times fresh processes, as a
user runs them: `python -m reconciler validate`, `diff` of the first plan (text and JSON),
`diff` once the world converged (after an `apply`), and, once per run, `--help` and `validate`
of a one-file repo. Each figure is min / median / max of ``--runs`` runs with the peak RSS of
that process (from wait4), and the per-Service cost (median / N, and the marginal cost between
consecutive sizes: constant when the work is linear).

``--compare REV`` checks REV out with `git worktree add` into a temporary directory and runs
every measurement for both trees, interleaved (this, REV, this, REV, ...) with PYTHONPATH
pointing at each tree, so both see the same machine state; it also says whether both printed
the same bytes. On a shared machine wall times are noisy: read medians, and the CPU times.
``--phases`` adds bench/plan_phases.py's in-process breakdown (load, read, plan, render).
Processes run as installed ones do, from bytecode (pip and the image byte-compile everything):
each tree's bytecode lives in its own temporary PYTHONPYCACHEPREFIX, written by warm-up runs
before anything is timed. ``--no-bytecode`` times compiling the source as well, every run.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scale_repo import ScaleRepo, write_one_file_repo

HERE = Path(__file__).resolve().parent
THIS_TREE = HERE.parent


@dataclass
class Tree:
    """One checkout of the code under test."""

    name: str
    root: Path
    commit: str
    pycache: Path | None = None  # where its bytecode is cached; None: compiled every run

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("CLOUDFLARE_API_TOKEN", "KUBECONFIG", "PYTHONSTARTUP", "PYTHONDONTWRITEBYTECODE",
                            "PYTHONPYCACHEPREFIX")}
        if self.pycache is None:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        env["PYTHONPATH"] = str(self.root)
        env["NO_COLOR"] = "1"
        return env


@dataclass
class Sample:
    wall_s: float
    cpu_s: float
    peak_rss_kib: int
    output_sha256: str


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)

    def summary(self, services: int | None) -> dict[str, object]:
        walls = [s.wall_s for s in self.samples]
        out: dict[str, object] = {
            "wall_s": [round(min(walls), 3), round(statistics.median(walls), 3), round(max(walls), 3)],
            "cpu_s_median": round(statistics.median(s.cpu_s for s in self.samples), 3),
            "peak_rss_mib": round(max(s.peak_rss_kib for s in self.samples) / 1024, 1),
        }
        if services:
            out["us_per_service"] = round(statistics.median(walls) / services * 1e6, 1)
        return out

    @property
    def median(self) -> float:
        return statistics.median(s.wall_s for s in self.samples)

    @property
    def outputs(self) -> set[str]:
        return {s.output_sha256 for s in self.samples}


def run_process(tree: Tree, argv: list[str], *, expect: tuple[int, ...] = (0,)) -> Sample:
    """Run ``python ARGV`` against ``tree``; wall and CPU time and peak RSS of that process alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=err, env=tree.env(),
                                   cwd=tempfile.gettempdir())
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read()
        if process.returncode not in expect:
            err.seek(0)
            raise RuntimeError(f"{tree.name}: {' '.join(argv)} exited {process.returncode}: "
                               f"{err.read().decode(errors='replace')[-2000:]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, hashlib.sha256(output).hexdigest())


@contextlib.contextmanager
def checked_out(rev: str, parent: Path, name: str | None = None) -> Iterator[Tree]:
    """REV in a temporary git worktree (removed afterwards)."""
    commit = subprocess.run(["git", "-C", str(THIS_TREE), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    path = parent / f"tree-{commit[:12]}"
    subprocess.run(["git", "-C", str(THIS_TREE), "worktree", "add", "--detach", "--quiet", str(path), commit],
                   check=True)
    try:
        yield Tree(name or rev, path, commit)
    finally:
        subprocess.run(["git", "-C", str(THIS_TREE), "worktree", "remove", "--force", str(path)], check=False)


def this_tree() -> Tree:
    commit = subprocess.run(["git", "-C", str(THIS_TREE), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(THIS_TREE), "status", "--porcelain", "--", "reconciler"],
                           capture_output=True, text=True).stdout.strip()
    return Tree("this", THIS_TREE, commit + (" (+ uncommitted changes)" if dirty else ""))


def warm_up(tree: Tree, one_file: Path, work: Path) -> None:
    """Write the tree's bytecode (and its libraries') the way an installed copy already has it."""
    if tree.pycache is None:
        return
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree.root / "reconciler")], env=tree.env(),
                   check=True, stdout=subprocess.DEVNULL)
    state = ScaleRepo.for_services(1).write_state(work / "warm-up-state")
    for argv in (["--help"], ["validate", str(one_file)], ["apply", str(one_file), "--state", str(state)],
                 ["diff", str(one_file), "--state", str(state), "--format", "json"]):
        run_process(tree, ["-m", "reconciler", *argv], expect=(0, 1, 2))
    shutil.rmtree(state)


def measure(trees: list[Tree], sizes: list[int], runs: int, work: Path, phases: bool) -> dict[str, object]:
    one_file = write_one_file_repo(work / "one-file")
    for tree in trees:
        warm_up(tree, one_file, work)
    startup: dict[str, dict[str, Series]] = {t.name: {"help": Series(), "validate_one_file": Series()} for t in trees}
    by_size: dict[int, dict[str, dict[str, Series]]] = {}
    phase_figures: dict[int, dict[str, object]] = {}
    for n in sizes:
        shape = ScaleRepo.for_services(n)
        repo = shape.write(work / f"repo-{n}")
        fresh = shape.write_state(work / f"state-{n}-fresh")
        converged = {}
        for tree in trees:  # each tree applies into its own state, then plans against it
            converged[tree.name] = shape.write_state(work / f"state-{n}-{tree.name}")
            run_process(tree, ["-m", "reconciler", "apply", str(repo), "--state", str(converged[tree.name])])
        commands = {
            "validate": ["-m", "reconciler", "validate", str(repo)],
            "diff_first": ["-m", "reconciler", "diff", str(repo), "--state", str(fresh)],
            "diff_first_json": ["-m", "reconciler", "diff", str(repo), "--state", str(fresh), "--format", "json"],
            "diff_converged": ["-m", "reconciler", "diff", str(repo), "--state", "{converged}"],
        }
        series = by_size[n] = {t.name: {name: Series() for name in commands} for t in trees}
        for _ in range(runs):
            for name, argv in commands.items():
                for tree in trees:  # interleaved: both trees see the same moment of the machine
                    args = [a.replace("{converged}", str(converged[tree.name])) for a in argv]
                    series[tree.name][name].samples.append(run_process(tree, args))
            if n == sizes[0]:
                for tree in trees:
                    startup[tree.name]["help"].samples.append(run_process(tree, ["-m", "reconciler", "--help"]))
                    startup[tree.name]["validate_one_file"].samples.append(
                        run_process(tree, ["-m", "reconciler", "validate", str(one_file)]))
        if phases:
            phase_figures[n] = {}
            for tree in trees:
                done = subprocess.run([sys.executable, str(HERE / "plan_phases.py"), str(repo), str(fresh)],
                                      env=tree.env(), capture_output=True, text=True)
                # A revision from before the package layout plan_phases.py uses cannot be split
                # into phases: said in the JSON, the whole-process figures still stand.
                phase_figures[n][tree.name] = json.loads(done.stdout) if done.returncode == 0 else {
                    "error": (done.stderr.strip().splitlines() or ["exited " + str(done.returncode)])[-1]}
        for tree in trees:
            shutil.rmtree(converged[tree.name])
        shutil.rmtree(repo)
    return _report(trees, sizes, runs, startup, by_size, phase_figures)


def _report(trees: list[Tree], sizes: list[int], runs: int, startup: dict[str, dict[str, Series]],
            by_size: dict[int, dict[str, dict[str, Series]]],
            phase_figures: dict[int, dict[str, object]]) -> dict[str, object]:
    names = [t.name for t in trees]
    report: dict[str, object] = {
        "runs": runs,
        "trees": {t.name: {"root": str(t.root), "commit": t.commit} for t in trees},
        "startup": {t: {k: s.summary(None) for k, s in startup[t].items()} for t in names},
    }
    sized: dict[str, object] = {}
    for n in sizes:
        entry: dict[str, object] = {t: {k: s.summary(n) for k, s in by_size[n][t].items()} for t in names}
        if len(names) == 2:
            this, other = names
            entry["speedup_median"] = {k: round(by_size[n][other][k].median / by_size[n][this][k].median, 2)
                                       for k in by_size[n][this]}
            entry["same_output"] = {k: by_size[n][this][k].outputs == by_size[n][other][k].outputs
                                    for k in by_size[n][this]}
        if n in phase_figures:
            entry["phases"] = phase_figures[n]
        sized[str(n)] = entry
    report["sizes"] = sized
    # Marginal cost per extra Service between consecutive sizes: flat when the work is linear.
    marginal: dict[str, object] = {}
    for small, large in itertools.pairwise(sizes):
        marginal[f"{small}->{large}"] = {
            t: {k: round((by_size[large][t][k].median - by_size[small][t][k].median) / (large - small) * 1e6, 1)
                for k in by_size[small][t]}
            for t in names}
    report["marginal_us_per_service"] = marginal
    if len(names) == 2:
        this, other = names
        report["startup_speedup_median"] = {k: round(startup[other][k].median / startup[this][k].median, 2)
                                            for k in startup[this]}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,40000",
                        help="comma-separated Service counts (default 1000,10000,40000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--compare", metavar="REV", default=None,
                        help="also measure this git revision, interleaved with the working tree")
    parser.add_argument("--this", metavar="REV", default=None,
                        help="measure this git revision (checked out apart) instead of the working tree, "
                        "so the tree can change while a long run goes on")
    parser.add_argument("--phases", action="store_true", help="add the in-process breakdown of one diff")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="compile the source in every process (as with PYTHONDONTWRITEBYTECODE and no .pyc)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    started = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="portside-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        trees = [stack.enter_context(checked_out(args.this, work, "this")) if args.this else this_tree()]
        if args.compare:
            trees.append(stack.enter_context(checked_out(args.compare, work)))
        if not args.no_bytecode:
            for number, tree in enumerate(trees):
                tree.pycache = work / f"pycache-{number}"
        report = measure(trees, sizes, args.runs, work, args.phases)
    report["machine"] = {
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.time() - started, 1),
        "note": "shared machine: figures are noisy; compare medians measured in this one run",
        "bytecode": "compiled every run" if args.no_bytecode else "cached, as installed",
    }
    report["goals"] = {"diff_10k_s": 1.0, "diff_40k_s": 4.0, "peak_rss_10k_mib": 100, "startup_s": 0.15}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
