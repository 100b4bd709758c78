"""Execute notebooks end to end with papermill: the engine of `make smoke` and
`make all`.

    python -m common.tools.run --profile profiles/smoke.yaml Q1/Q1.ipynb Q2/Q2.ipynb
    python -m common.tools.run --profile profiles/full.yaml --set epochs=5 Q2/Q2.ipynb

A profile is YAML with `defaults` (parameters for every notebook) and
`notebooks` (per-notebook parameters, keyed by path). On top of those the runner
sets the path parameters, and `--set key=value` overrides win over everything.
A parameter goes only to notebooks whose parameters cell declares it.

For `Q2/Q2.ipynb` the executed copy is `build/Q2/Q2.ipynb`, results go to
`build/Q2/results/` and checkpoints to `runs/<profile>/Q2/`, so a smoke run
never resumes a full run's checkpoints. The committed notebook is never written.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import papermill as pm
import yaml
from jupyter_client.kernelspec import KernelSpecManager

from ..config import ROOT

BUILD = ROOT / "build"
RUNS = ROOT / "runs"


class RunError(RuntimeError):
    pass


def load_profile(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        known = ", ".join(str(p.relative_to(ROOT)) for p in sorted((ROOT / "profiles").glob("*.yaml")))
        raise RunError(f"profile {path} not found; known profiles: {known}")
    profile = yaml.safe_load(path.read_text()) or {}
    unknown = set(profile) - {"defaults", "notebooks"}
    if unknown:
        raise RunError(f"profile {path}: unknown top-level keys {sorted(unknown)}; "
                       "use 'defaults' and 'notebooks'")
    profile.setdefault("defaults", {})
    profile.setdefault("notebooks", {})
    profile["name"] = path.stem
    return profile


def parse_sets(items: list[str]) -> dict:
    """`key=value` pairs; values are parsed as YAML so numbers, booleans and
    lists keep their types (`fractions=[0.1,0.5]`)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RunError(f"--set {item!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def notebook_id(notebook: Path) -> Path:
    """`Q2/Q2.ipynb` for a notebook inside the bundle; `<folder>/<name>` outside it."""
    path = notebook.resolve()
    try:
        return path.relative_to(ROOT)
    except ValueError:
        return Path(path.parent.name) / path.name


def notebook_parameters(profile: dict, notebook: Path, data_dir: str, overrides: dict,
                        build_dir: Path = BUILD, runs_root: Path = RUNS) -> dict:
    """The parameters for one notebook, in increasing priority: profile
    defaults, the runner's paths, the profile's notebook entry, --set."""
    rel = notebook_id(notebook)
    # Q2/Q2.ipynb -> Q2; a folder of several notebooks (extras/) gets one
    # subfolder each, so their summaries and runs never overwrite each other.
    folder = rel.parent if rel.parent.name == rel.stem else rel.parent / rel.stem
    params = dict(profile["defaults"])
    params.update(data_dir=str(Path(data_dir).resolve()),
                  results_dir=str(build_dir / folder / "results"),
                  runs_dir=str(runs_root / profile["name"] / folder))
    params.update(profile["notebooks"].get(rel.as_posix(), {}) or {})
    params.update(overrides)
    return params


def notebook_defaults(notebook: str | Path, profile: str | Path | None = None) -> dict:
    """A notebook's parameters as its parameters cell sets them, with a profile's
    defaults and notebook entry on top (only keys the notebook declares): what a
    benchmark or a test needs to use the very settings a run would."""
    notebook = Path(notebook)
    nb = json.loads(notebook.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params = {node.targets[0].id: ast.literal_eval(node.value)
              for node in ast.parse("".join(cell["source"])).body}
    if profile is not None:
        prof = load_profile(profile)
        entry = prof["notebooks"].get(notebook_id(notebook).as_posix(), {}) or {}
        params.update({k: v for k, v in {**prof["defaults"], **entry}.items() if k in params})
    return params


def check_overrides(overrides: dict, notebooks: list[Path]) -> None:
    """A mistyped --set key would otherwise be dropped without a word."""
    declared = set().union(*(pm.inspect_notebook(str(nb)) for nb in notebooks))
    unknown = sorted(set(overrides) - declared)
    if unknown:
        raise RunError(f"--set {', '.join(unknown)}: no selected notebook declares "
                       f"{'it' if len(unknown) == 1 else 'them'}; declared parameters: "
                       f"{', '.join(sorted(declared))}")


def check_kernel(kernel: str | None) -> None:
    if kernel is None:
        return
    known = KernelSpecManager().find_kernel_specs()
    if kernel not in known:
        raise RunError(f"no Jupyter kernel named {kernel!r} (known: {', '.join(sorted(known))}). "
                       "`make venv` registers the bundle's kernel; or pass --kernel python3.")


def run_notebook(notebook: Path, params: dict, kernel: str | None,
                 build_dir: Path = BUILD) -> Path:
    """Execute one notebook into build_dir; a failing cell raises RunError
    naming the notebook and the cell."""
    rel = notebook_id(notebook)
    output = build_dir / rel
    output.parent.mkdir(parents=True, exist_ok=True)
    declared = pm.inspect_notebook(str(notebook))
    if not declared:
        raise RunError(f"{rel}: no cell tagged 'parameters'")
    params = {k: v for k, v in params.items() if k in declared}
    print(f"\n=== {rel} -> {output}", flush=True)
    for k, v in params.items():
        print(f"    {k} = {v!r}")
    started = time.time()
    try:
        pm.execute_notebook(str(notebook), str(output), parameters=params,
                            kernel_name=kernel, cwd=str(notebook.resolve().parent),
                            log_output=True, progress_bar=False,
                            # What the notebook prints (plans, one line per epoch) streams
                            # to the terminal as it runs, so a long run shows its progress.
                            stdout_file=sys.stdout)
    except pm.PapermillExecutionError as err:
        raise RunError(
            f"{rel} failed in cell {err.exec_count} ({err.ename}: {err.evalue}).\n"
            f"The executed copy up to the failure is {output}.") from None
    print(f"=== {rel} done in {time.time() - started:.1f} s", flush=True)
    return output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.tools.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", help="notebook paths, relative to the bundle root")
    ap.add_argument("--profile", required=True, help="a YAML file in profiles/")
    ap.add_argument("--data-dir", default="data", help="where datasets are found or cached")
    ap.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter for every notebook that declares it")
    ap.add_argument("--build-dir", default=str(BUILD), help="where executed notebooks and results go")
    ap.add_argument("--runs-dir", default=str(RUNS), help="where training checkpoints go")
    args = ap.parse_args(argv)
    build_dir, runs_root = Path(args.build_dir).resolve(), Path(args.runs_dir).resolve()
    try:
        profile = load_profile(args.profile)
        overrides = parse_sets(args.set)
        notebooks = [ROOT / nb if not Path(nb).is_absolute() else Path(nb) for nb in args.notebooks]
        missing = [str(nb) for nb in notebooks if not nb.is_file()]
        if missing:
            raise RunError(f"no such notebook: {', '.join(missing)}")
        check_kernel(args.kernel)
        check_overrides(overrides, notebooks)
        started = time.time()
        for nb in notebooks:
            params = notebook_parameters(profile, nb, args.data_dir, overrides, build_dir, runs_root)
            run_notebook(nb, params, args.kernel, build_dir)
        print(f"\nAll {len(notebooks)} notebook(s) executed in {time.time() - started:.1f} s; "
              f"outputs in {build_dir}")
    except RunError as err:
        print(f"\nERROR: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
