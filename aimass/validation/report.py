"""The verdict of data validation: the report, its Markdown summary, the histograms page section, and the error that
stops the pipeline naming every failed expectation."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aimass.data.profile import CATEGORICAL_STATISTICS
from aimass.errors import DataValidationError
from aimass.reports import figure_png_base64, markdown_table
from aimass.validation.comparisons import DistanceComparison
from aimass.validation.leaks import LeakedPair
from aimass.validation.suite import ExpectationOutcome


@dataclass(frozen=True)
class DataValidationReport:
    success: bool
    outcomes: list[ExpectationOutcome]
    data_docs_page: Path
    comparisons: list[DistanceComparison]
    drift_note: str  # why there was no drift check, when there was none
    leaks: dict[str, list[LeakedPair]] = field(default_factory=dict)  # held-out copies of train images, by split

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.success]


def histograms_html(comparisons: list[DistanceComparison]) -> str:
    """Each compared pair of histograms side by side, one row per comparison, as an HTML section."""
    import html

    from matplotlib.figure import Figure

    sections = []
    for comparison in comparisons:
        statistics = [check.statistic for check in comparison.checks]
        figure = Figure(figsize=(3.2 * len(statistics), 2.6))
        axes_row = figure.subplots(1, len(statistics), squeeze=False)[0]
        for axes, check in zip(axes_row, comparison.checks):
            shares, reference = _shares(comparison.profile, check.statistic), _shares(comparison.reference,
                                                                                    check.statistic)
            positions = np.arange(len(reference))
            axes.bar(positions - 0.2, reference, width=0.4, label="reference")
            axes.bar(positions + 0.2, shares, width=0.4, label="compared")
            axes.set_title(f"{check.statistic}: {check.distance:.3f} (max {check.threshold:.3f})",
                           color="black" if check.passed else "red", fontsize=9)
            axes.set_xticks([])
        axes_row[0].legend(fontsize=7)
        sections.append(f"<h3>{html.escape(comparison.compared)}</h3><img alt='{html.escape(comparison.compared)}' "
                        f"src='data:image/png;base64,{figure_png_base64(figure)}'/>")
    return ("<section><h2>Skew and drift: histograms side by side</h2><p>Bins of numeric statistics are cut at the "
            "reference's deciles; a bar is a bin's share of images.</p>" + "".join(sections) + "</section>")


def _shares(profile: dict, statistic: str) -> np.ndarray:
    if statistic in CATEGORICAL_STATISTICS:
        counts = np.asarray(list(profile["categorical"][statistic].values()), dtype=float)
    else:
        counts = np.asarray(profile["numeric"][statistic]["counts"], dtype=float)
    return counts / max(counts.sum(), 1)


def summary_markdown(report: DataValidationReport) -> str:
    verdict = "passed" if report.success else f"FAILED ({len(report.failures)} expectations)"
    rows = [("pass" if o.success else "**FAIL**", o.description, o.observed) for o in report.outcomes]
    note = f"\n\nDrift: {report.drift_note}\n" if report.drift_note else ""
    return (f"# Data validation {verdict}\n\n" + markdown_table(["result", "expectation", "observed"], rows) + note
            + leaks_markdown(report.leaks))


SHOWN_PAIRS = 50  # per split; the count says how many there are


def leaks_markdown(leaks: dict[str, list[LeakedPair]]) -> str:
    """The held-out images that copy a training image, each with the image it copies: what to remove from one
    split or the other."""
    sections = []
    for split, pairs in leaks.items():
        if not pairs:
            continue
        rows = [(pair.image, pair.train_image, "identical" if pair.exact else f"{pair.hash_distance} bits",
                 f"{pair.pixel_difference:.2f}") for pair in pairs[:SHOWN_PAIRS]]
        more = f"\n{len(pairs) - SHOWN_PAIRS} more not shown.\n" if len(pairs) > SHOWN_PAIRS else ""
        sections.append(f"\n## {len(pairs)} {split} images copy a train image\n\n"
                        + markdown_table([f"{split} image", "train image", "hash distance", "pixel difference"],
                                         rows) + more)
    return "".join(sections)


def leaks_html(leaks: dict[str, list[LeakedPair]]) -> str:
    """The same pairs as an HTML section of the Data Docs page (every name escaped)."""
    import html

    rows = "".join(f"<tr><td>{html.escape(pair.split)}</td><td>{html.escape(pair.image)}</td>"
                   f"<td>{html.escape(pair.train_image)}</td><td>{'identical' if pair.exact else pair.hash_distance}"
                   f"</td><td>{pair.pixel_difference:.2f}</td></tr>"
                   for pairs in leaks.values() for pair in pairs[:SHOWN_PAIRS])
    total = sum(len(pairs) for pairs in leaks.values())
    if not total:
        return "<section><h2>Held-out copies of training images</h2><p>None found.</p></section>"
    return (f"<section><h2>Held-out copies of training images: {total}</h2><table><tr><th>split</th><th>image</th>"
            f"<th>train image</th><th>hash distance (bits)</th><th>pixel difference (0..255)</th></tr>{rows}</table>"
            "</section>")


def raise_for_failures(report: DataValidationReport) -> None:
    """Raises DataValidationError naming every failed expectation, if any failed."""
    if not report.success:
        failed = "; ".join(f"{o.description} (observed {o.observed})" for o in report.failures)
        raise DataValidationError(f"data validation failed, {len(report.failures)} expectations: {failed}")
