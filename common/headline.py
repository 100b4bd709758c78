"""Answers first: one table per question, a row per sub-question answer, from the
results the notebook has just computed (never typed).

The notebook displays it in its last cell, tagged `headline`; the grader's report
(common.tools.report) moves that cell's output to the top of the first page.

    q2_headline(runs_a, runs_b, selection, label_of=label_of, optimiser_label=OPTIMISER_LABEL)
    q3_headline(rows_a, runs_b, runs_c, describe=text.describe_freeze)
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from .latex import markdown_table
from .observations import pct, points, run_stats

__all__ = ["HEADLINE_TAG", "q2_headline", "q3_headline"]

HEADLINE_TAG = "headline"


def _result(history: Mapping[str, Any], split: str = "test") -> str:
    """'91.2% (best 91.4%, epoch 38)', or how the run stopped."""
    s = run_stats(history)
    if not s["epochs"]:
        return "stopped before its first epoch ended"
    text = f"{pct(s['final_accuracy'])} {split} accuracy"
    if s["best_accuracy"] > s["final_accuracy"]:
        text += f" (best {pct(s['best_accuracy'])}, epoch {s['best_epoch']})"
    return text + (f"; stopped after epoch {s['epochs']}" if s["stopped"] else "")


def q2_headline(runs_a: Sequence[Mapping], runs_b: Sequence[Mapping],
                selection: Mapping[str, Mapping[str, Any]], *, label_of: Callable[[str], str],
                optimiser_label: Mapping[str, str], notice: str = "") -> str:
    """(a) each network's final and best test accuracy, (b) each optimiser's, (c) each
    chosen method's gain on validation and its one test evaluation. `notice` (a smoke
    or quick run's label) follows the table, so it is on the first page too."""
    rows = [["(a)", f"{r['label']}, SGD lr {r['lr']:g}", _result(r["history"])] for r in runs_a]
    rows += [["(b)", f"{r['label']}, {optimiser_label[r['optimizer']]} lr {r['lr']:g}",
              _result(r["history"])] for r in runs_b]
    for net, sel in selection.items():
        base = sel["test_accuracy"]["baseline"]
        gains = {c["method"]: c["gain"] for c in sel["candidates"]}
        for method in sel["chosen"]:
            test = sel["test_accuracy"][method]
            verdict = ("effective: beyond noise" if method in sel["effective"] else
                       "not effective: within noise or a loss")
            rows.append(["(c)", f"{label_of(net)} + {method}",
                         f"{points(gains[method])} on validation ({verdict}); test {pct(test)} "
                         f"against the baseline's {pct(base)} ({points(test - base)})"])
        rows.append(["(c)", f"{label_of(net)}: methods effective on validation",
                     f"{len(sel['effective'])} of the {len(sel['chosen'])} chosen"])
    return ("**Q2 at a glance.** Final accuracy on the test set after the last epoch; for (c), "
            "the gain chosen on validation and the single test evaluation.\n\n"
            + markdown_table(["part", "setting", "result"], rows) + (f"\n\n{notice}" if notice else ""))


def q3_headline(rows_a: Sequence[Mapping], runs_b: Sequence[Mapping],
                runs_c: Sequence[Mapping], *, describe: Callable[[str, str], str],
                notice: str = "") -> str:
    """(a) the pretrained-vs-scratch gain at each fraction, (b) each model, (c) each
    freezing strategy's accuracy and time per epoch. Runs near chance say so; `notice`
    (the caveats: a smoke or quick run, weights that are not ImageNet's) follows."""
    def acc(value: float, near: bool) -> str:
        return pct(value) + (" (near chance)" if near else "")

    rows = []
    for r in rows_a:
        void = r["pretrained_near_chance"] or r["scratch_near_chance"]
        gain = "void: a run ended near chance" if void else points(r["pretrained"] - r["scratch"])
        rows.append(["(a)", f"{100 * r['fraction']:g}% of the data ({r['images']:,} images)",
                     f"pretrained {acc(r['pretrained'], r['pretrained_near_chance'])}, scratch "
                     f"{acc(r['scratch'], r['scratch_near_chance'])}: {gain}"])
    for r in runs_b:
        rows.append(["(b)", r["label"], acc(r["history"]["eval_accuracy"][-1], r["near_chance"])
                     if r["history"]["eval_accuracy"] else "stopped early"])
    for r in runs_c:
        seconds = r["history"]["seconds"]
        final = r["history"]["eval_accuracy"]
        rows.append(["(c)", f"{describe(r['model'], r['freeze'])} trained",
                     (acc(final[-1], r["near_chance"]) if final else "stopped early")
                     + (f", {sum(seconds) / len(seconds):.1f} s per epoch" if seconds else "")])
    return ("**Q3 at a glance.** Final test accuracy of each run; for (a), the gain of "
            "ImageNet pretraining over training from scratch, in points.\n\n"
            + markdown_table(["part", "setting", "result"], rows) + (f"\n\n{notice}" if notice else ""))
