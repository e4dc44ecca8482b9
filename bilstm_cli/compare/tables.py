"""The comparison (report.py's dict) as tables of text: the same rows make the terminal's rich
tables (console.compare_tables), the plain text printed into a pipe, and compare.md.
Learning curves are sparklines, on one scale for all variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SPARKS = "▁▂▃▄▅▆▇█"
TEXT_WIDTH = 90  # characters of a disagreement's text shown


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def sparkline(values: Sequence[float | None], low: float, high: float) -> str:
    """One block character per value, from ▁ at `low` to █ at `high`."""
    span = high - low
    return "".join(
        " " if v is None else SPARKS[int(round((v - low) / span * (len(SPARKS) - 1)))
                                     if span > 0 else len(SPARKS) // 2]
        for v in values)


def _number(summary: dict[str, Any] | None, digits: int = 4, unit: str = "") -> str:
    if summary is None:
        return "-"
    text = f"{summary['mean']:,.{digits}f}"
    if summary["sd"] is not None:
        text += f" ± {summary['sd']:,.{digits}f}"
    return text + unit


def tables(report: dict[str, Any]) -> list[Table]:
    return [_variants(report), _significance(report), _lengths(report),
            _disagreements(report)]


def _variants(report: dict[str, Any]) -> Table:
    variants = report["variants"]
    rows = [
        ["settings", *("; ".join(v["settings"]) or "-" for v in variants)],
        ["seeds", *(", ".join(map(str, v["seeds"])) for v in variants)],
        ["parameters", *(f"{v['parameters']:,}" for v in variants)],
        ["training s/epoch", *(_number(v["seconds_per_epoch"], 1) for v in variants)],
        ["training examples/s", *(_number(v["examples_per_second"], 0) for v in variants)],
        ["prediction latency, 1 text", *(_number(v["latency_ms"], 1, " ms") for v in variants)],
        ["predictions/s, test set", *(_number(v["predictions_per_second"], 0)
                                      for v in variants)],
    ]
    for split in ("validation", "test"):
        for metric, name in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            rows.append([f"{split} {name}", *(_number(v[f"{split}_{metric}"])
                                              for v in variants)])
    for key, name in (("val_accuracy", "validation accuracy by epoch"),
                      ("loss", "training loss by epoch")):
        rows.append([name, *_curves([v["curve"][key] for v in variants])])
    return Table("the variants (mean ± sd over seeds)", ["", *(v["name"] for v in variants)],
                 rows)


def _curves(curves: list[list[float | None]]) -> list[str]:
    known = [x for curve in curves for x in curve if x is not None]
    if not known:
        return ["-"] * len(curves)
    low, high = min(known), max(known)
    cells = []
    for curve in curves:
        ends = [x for x in curve if x is not None]
        cells.append(f"{sparkline(curve, low, high)} {ends[0]:.3f}→{ends[-1]:.3f}"
                     if ends else "-")
    return cells


def _significance(report: dict[str, Any]) -> Table:
    rows, notes = [], []
    for c in report["comparisons"]:
        pair = f"{c['baseline']} → {c['variant']}"
        for s in c["seeds"]:
            mcnemar = s["mcnemar"]
            test = "-" if mcnemar is None else (
                f"{mcnemar['only_first_right']} / {mcnemar['only_second_right']}, "
                f"p = {mcnemar['p_value']:.2g}")
            seeds = str(s["seeds"][0]) if s["seeds"][0] == s["seeds"][1] else \
                f"{s['seeds'][0]} / {s['seeds'][1]}"
            rows.append([pair, seeds, f"{s['accuracy'][0]:.4f} → {s['accuracy'][1]:.4f}",
                         f"{s['difference']:+.4f}", _interval(s["interval"]), test, ""])
        aso = c["aso"]
        count = len(c["seeds"])
        rows.append([pair, f"mean, {count} seed{'s' * (count != 1)}", "", f"{c['difference']:+.4f}",
                     _interval(c["interval"]),
                     f"{c['mcnemar_significant_seeds']} of {len(c['seeds'])} seeds p < 0.05",
                     "-" if aso is None else f"{aso['variant_better']:.2f} / "
                     f"{aso['baseline_better']:.2f}"])
        notes.append(_verdict(c))
    return Table("is the difference real? (test accuracy)",
                 ["variants", "seed", "accuracy", "difference", "95% interval (bootstrap)",
                  "McNemar: right only 1st / 2nd", "ASO ε_min: 2nd / 1st better"],
                 rows, notes + report["notes"])


def _interval(interval: list[float]) -> str:
    return f"{interval[0]:+.4f} to {interval[1]:+.4f}"


def _verdict(c: dict[str, Any]) -> str:
    """One line: the difference, the bootstrap's verdict, and what the tests say."""
    low, high = (100 * x for x in c["interval"])
    seeds = len(c["seeds"])
    head = "no clear difference" if c["verdict"] == "no clear difference" else \
        f"{c['variant']} is {c['verdict']}"
    evidence = [f"{c['difference'] * 100:+.2f} points of test accuracy, 95% interval "
                f"{low:+.2f} to {high:+.2f}",
                f"McNemar p < 0.05 on {c['mcnemar_significant_seeds']} of {seeds} "
                f"seed{'s' * (seeds != 1)}"]
    if c["aso"] is not None:
        evidence.append(f"ASO ε_min {c['aso']['variant_better']:.2f} that {c['variant']} is "
                        f"better, {c['aso']['baseline_better']:.2f} that {c['baseline']} is "
                        "(below 0.5: almost stochastically better)")
    return f"{c['variant']} against {c['baseline']}: {head} ({'; '.join(evidence)})"


def _lengths(report: dict[str, Any]) -> Table:
    by_length, names = report["by_length"], [v["name"] for v in report["variants"]]
    rows = []
    for index, part in enumerate(by_length["parts"]):
        words = "-" if part["words"] is None else f"{part['words'][0]}-{part['words'][1]}"
        cells = [_number(by_length["accuracy"][name][index]) for name in names]
        rows.append([part["name"], words, str(part["texts"]), *cells])
    return Table("test accuracy by text length (three equal parts, by words)",
                 ["part", "words", "texts", *names], rows)


def _disagreements(report: dict[str, Any]) -> Table:
    names = [v["name"] for v in report["variants"]]
    rows = []
    for example in report["disagreements"]:
        text = " ".join(example["text"].split())
        text = text if len(text) <= TEXT_WIDTH else text[:TEXT_WIDTH - 1] + "…"
        rows.append([text, example["label"], *(
            f"{example['predictions'][n]['label']} {example['predictions'][n]['probability']:.2f}"
            for n in names)])
    seed = report["variants"][0]["seeds"][0]
    return Table(f"where they disagree (test texts, seed {seed}; label and probability)",
                 ["text", "true label", *names], rows,
                 [] if rows else ["the variants agree on every test text"])


def markdown(report: dict[str, Any], picture: str | None) -> str:
    """compare.md: the tables, their notes, and the picture."""
    test = report["test"]
    lines = ["# bilstm compare", "",
             f"Test set: {test['source']} ({test['texts']:,} texts). Baseline: "
             f"{report['baseline']}.", ""]
    if report.get("command"):
        lines += [f"Command: `{' '.join(report['command'])}`", ""]
    for table in tables(report):
        lines += [f"## {table.title}", "", *plain_table(table), ""]
        lines += [f"- {note}" for note in table.notes] + ([""] if table.notes else [])
    if picture:
        lines += [f"![learning curves, test accuracy and accuracy by length]({picture})", ""]
    return "\n".join(lines)


def plain_table(table: Table) -> list[str]:
    """A Markdown table (also the plain text a pipe gets)."""
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [row(table.header), row(["---"] * len(table.header)),
            *(row(cells) for cells in table.rows)]
