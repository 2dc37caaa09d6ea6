"""validate_data: the KFP wrapper of aimass/validation/stage.py's `validate_data` (the suite, skew and drift
comparisons live in aimass/validation/)."""
from kfp.dsl import HTML, Dataset, Input, Markdown, Output

from aimass.components.base import project_component


@project_component
def validate_data_component(config_json: str, splits: Input[Dataset], data_docs: Output[HTML],
                            summary: Output[Markdown]):
    """Validate the splits with Great Expectations; fail the step (and so the run) if any expectation fails.

    Args:
        config_json: the resolved AimassConfig as JSON.
        splits: the ingest output.
        data_docs: the GX Data Docs validation page, with the skew and drift histograms side by side.
        summary: every expectation with its result and observed value, as Markdown.
    """
    import tempfile
    from pathlib import Path

    from aimass.validation.report import histograms_html, leaks_html, raise_for_failures, summary_markdown
    from aimass.validation.stage import validate_data
    from aimass.config import AimassConfig
    from aimass.reports import self_contained_html

    with tempfile.TemporaryDirectory() as work_dir:
        report = validate_data(AimassConfig.from_json(config_json), Path(splits.path), Path(work_dir))
        # GX's page pulls Bootstrap, jQuery and Vega from CDNs: keep its content, drop what would be fetched.
        page = self_contained_html(report.data_docs_page.read_text())
        sections = histograms_html(report.comparisons) + leaks_html(report.leaks)
        Path(data_docs.path).write_text(page.replace("</body>", sections + "</body>", 1))
    Path(summary.path).write_text(summary_markdown(report))
    for artifact in (data_docs, summary):
        artifact.metadata.update({"success": report.success, "data_md5": splits.metadata["data_md5"]})
    raise_for_failures(report)
