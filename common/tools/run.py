"""Execute notebooks end to end with papermill: the engine of `make smoke` and
`make all`.

    python -m common.tools.run --profile profiles/smoke.yaml Q1/Q1.ipynb Q2/Q2.ipynb
    python -m common.tools.run --profile profiles/full.yaml --set epochs=5 Q2/Q2.ipynb

A profile is YAML with `defaults` (every notebook's parameters) and `notebooks`
(per notebook, keyed by path); the runner sets the paths, and `--set key=value`
wins over everything. A parameter goes only to notebooks that declare it.

For `Q2/Q2.ipynb` the executed copy is `build/Q2/Q2.ipynb`, results go to
`build/Q2/results/` and checkpoints to `runs/<profile>/Q2/`, so a smoke run never
resumes a full run's checkpoints; the committed notebook is never written. A run
that fails (or is interrupted) never replaces a good executed notebook: it is kept
as `build/Q2/Q2.failed.ipynb`, with its results in `build/Q2/results.failed/`.

`--set` values read as the parameters cell reads its own: Python literals
(`lr_sgd=1e-4` is a float), YAML's true/false and bare-word lists too; `--sets`
takes make's whole SET string. Every mistake is one line."""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
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
    """A run cannot start or go on; the message says why and what to do."""


class Interrupted(RunError):
    """Ctrl-C: the run stopped where it was; what it finished is kept."""


def _yaml_error(err: yaml.YAMLError) -> str:
    """A YAML error in one line: where, and what."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (getattr(err, "problem", None) or str(err).splitlines()[0])


def _literals(value):
    """Strings inside YAML lists and mappings read as Python literals where they are one:
    YAML 1.1 reads 1e-4 as a string, Python (and the parameters cell) as a float."""
    if isinstance(value, dict):
        return {k: _literals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literals(v) for v in value]
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
    return value


def load_profile(path: str | Path) -> dict:
    """A profile's `defaults` and `notebooks`, checked: every mistake is one line."""
    path = Path(path)
    if not path.is_file():
        known = ", ".join(str(p.relative_to(ROOT)) for p in sorted((ROOT / "profiles").glob("*.yaml")))
        raise RunError(f"profile {path} not found; known profiles: {known}")
    try:
        profile = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RunError(f"profile {path} is not valid YAML ({_yaml_error(err)}); compare it with "
                       "profiles/full.yaml") from None
    if not isinstance(profile, dict):
        raise RunError(f"profile {path}: expected the keys 'defaults' and 'notebooks', found "
                       f"{type(profile).__name__} {profile!r}")
    unknown = set(profile) - {"defaults", "notebooks"}
    if unknown:
        raise RunError(f"profile {path}: unknown top-level keys {sorted(unknown)}; "
                       "use 'defaults' and 'notebooks'")
    for key in ("defaults", "notebooks"):
        profile[key] = _literals(profile.get(key) or {})  # `notebooks:` left empty: none
        if not isinstance(profile[key], dict):
            raise RunError(f"profile {path}: '{key}' must hold 'name: value' lines, found "
                           f"{profile[key]!r}")
    for name, entry in profile["notebooks"].items():
        if not isinstance(entry or {}, dict):
            raise RunError(f"profile {path}: notebooks: {name} must hold 'parameter: value' "
                           f"lines, found {entry!r}")
        profile["notebooks"][name] = entry or {}
    profile["name"] = path.stem
    return profile


def split_sets(text: str) -> list[str]:
    """make's SET="a=1 b=[x, y]" -> ["a=1", "b=[x, y]"]: split outside brackets and quotes."""
    items, current, depth, quote = [], "", 0, None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth = max(0, depth - 1)
        elif ch.isspace() and not depth:
            items, current = items + [current] * bool(current), ""
            continue
        current += ch
    return items + [current] * bool(current)


def parse_value(key: str, text: str):
    """A --set value as the notebook's parameters cell would read it: a Python literal
    (1e-4 and 1e6 are floats, [0.1, 0.5] a list, 'cuda' a string), true/false/none in
    any case, a list of bare words ([vgg16, resnet18]), or else the text as a string."""
    text = text.strip()
    if not text:
        raise RunError(f"--set {key}=: no value; write e.g. {key}=5 (SET=\"{key}=5\")")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    words = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in words:
        return words[text.lower()]
    if text[0] in "[({" or text[-1] in "])}":
        try:
            return _literals(yaml.safe_load(text))
        except yaml.YAMLError as err:
            raise RunError(f"--set {key}={text}: not a value ({_yaml_error(err)}); write a list "
                           f"as {key}=[a,b] or SET=\"{key}=[a, b]\", each bracket closed") from None
    return text


def parse_sets(items: list[str]) -> dict:
    """`key=value` pairs, each value read by parse_value."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RunError(f"--set {item!r}: expected key=value (a value with spaces needs the "
                           "whole SET in quotes: SET=\"models_b=[tv_vgg16, tv_resnet18]\")")
        out[key.strip()] = parse_value(key.strip(), value)
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


# The kernel's own log (not the notebook's output) says only that it runs over TCP on this
# machine, and logs a traceback when it is shut down mid-cell after Ctrl-C: noise here.
QUIET_KERNEL = ["--IPKernelApp.log_level=CRITICAL"]


def _set_aside(results: Path | None, good: Path) -> Path | None:
    """A copy of the results of the good executed notebook `good`, put back if the new
    run fails: results/ always belongs to the notebook beside it."""
    if not (good.is_file() and results and results.is_dir()):
        return None
    backup = results.with_name(results.name + ".previous")
    shutil.rmtree(backup, ignore_errors=True)
    shutil.copytree(results, backup)
    return backup


def _keep_failed(staging: Path, output: Path, results: Path | None, backup: Path | None) -> str:
    """After a failed or interrupted run: its notebook (and results) beside the good ones,
    which stay in place. Returns what to tell the user."""
    failed = output.with_name(f"{output.stem}.failed.ipynb")
    if staging.exists():
        os.replace(staging, failed)
    if backup is None:
        return f"The executed copy so far is {failed}."
    shutil.rmtree(results.with_name(results.name + ".failed"), ignore_errors=True)
    if results.exists():
        os.replace(results, results.with_name(results.name + ".failed"))
    os.replace(backup, results)
    return (f"The failed copy is {failed}; the last good run, {output}, and its results are "
            "kept (make check and make zip use it).")


def run_notebook(notebook: Path, params: dict, kernel: str | None,
                 build_dir: Path = BUILD) -> Path:
    """Execute one notebook into build_dir. A failing cell, or Ctrl-C, raises RunError
    naming the notebook and the cell; a failed run never replaces a good executed
    notebook (or its results): it is kept beside it, as Qn.failed.ipynb."""
    rel = notebook_id(notebook)
    output = build_dir / rel
    staging = output.with_name(f"{output.stem}.running.ipynb")
    output.parent.mkdir(parents=True, exist_ok=True)
    declared = pm.inspect_notebook(str(notebook))
    if not declared:
        raise RunError(f"{rel}: no cell tagged 'parameters'")
    results = Path(params["results_dir"]) if params.get("results_dir") else None
    params = {k: v for k, v in params.items() if k in declared}
    print(f"\n=== {rel} -> {output}", flush=True)
    for k, v in params.items():
        print(f"    {k} = {v!r}")
    started, backup = time.time(), _set_aside(results, output)
    try:
        pm.execute_notebook(str(notebook), str(staging), parameters=params,
                            kernel_name=kernel, cwd=str(notebook.resolve().parent),
                            progress_bar=False, extra_arguments=QUIET_KERNEL,
                            # What the notebook prints (plans, one line per epoch) streams
                            # to the terminal as it runs, so a long run shows its progress.
                            stdout_file=sys.stdout, stderr_file=sys.stderr)
    except pm.PapermillExecutionError as err:
        evalue = (str(err.evalue).strip().splitlines() or [""])[0]
        raise RunError(f"{rel} failed in cell {err.exec_count} ({err.ename}: {evalue}).\n"
                       + _keep_failed(staging, output, results, backup)) from None
    except KeyboardInterrupt:
        raise Interrupted(f"{rel} interrupted (Ctrl-C). " + _keep_failed(
            staging, output, results, backup) + " Finished training runs and checkpoints are "
            "kept in runs/: the same command resumes.") from None
    os.replace(staging, output)
    output.with_name(f"{output.stem}.failed.ipynb").unlink(missing_ok=True)
    if results is not None:  # the set-aside copy and an earlier failure's results
        for stale in (".previous", ".failed"):
            shutil.rmtree(results.with_name(results.name + stale), ignore_errors=True)
    print(f"=== {rel} done in {time.time() - started:.1f} s", flush=True)
    return output


def check_data_dir(data_dir: str) -> None:
    path = Path(data_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise RunError(f"DATA_DIR={data_dir} is a file, not a folder: set DATA_DIR (--data-dir) to "
                       "the folder that holds the datasets or will receive them, e.g. DATA_DIR=data")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.tools.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="notebook paths, relative to the bundle root")
    ap.add_argument("--profile", required=True, help="a YAML file in profiles/")
    ap.add_argument("--data-dir", default="data", help="where datasets are found or cached")
    ap.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter for every notebook that declares it")
    ap.add_argument("--sets", default="", metavar='"KEY=VALUE ..."',
                    help="several --set in one string, as make's SET passes them: split at "
                         "spaces outside brackets and quotes")
    ap.add_argument("--build-dir", default=str(BUILD), help="where executed notebooks and results go")
    ap.add_argument("--runs-dir", default=str(RUNS), help="where training checkpoints go")
    ap.add_argument("--check", action="store_true",
                    help="check the profile, the --set values and the data folder; run nothing")
    args = ap.parse_args(argv)
    if not args.notebooks and not args.check:
        ap.error("name at least one notebook, e.g. Q1/Q1.ipynb")
    build_dir, runs_root = Path(args.build_dir).resolve(), Path(args.runs_dir).resolve()
    try:
        profile = load_profile(args.profile)
        overrides = parse_sets(split_sets(args.sets) + args.set)
        check_data_dir(args.data_dir)
        if args.check:
            return 0
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
    except Interrupted as err:
        print(f"\nINTERRUPTED: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nINTERRUPTED (Ctrl-C) before a notebook started; nothing was changed.",
              file=sys.stderr)
        return 130
    except RunError as err:
        print(f"\nERROR: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
