"""What the Kubeflow UI shows: the compiled IR declares each output with the artifact type the UI renders, and every
HTML artifact of a real tiny run renders whole in headless Chromium with nothing fetched from elsewhere."""
from pathlib import Path

import pytest
import yaml
from headless_chromium import chromium_path, open_page

from aimass.config import CLUSTER_OVERRIDES, load_config
from aimass.pipelines.compile import compile_pipeline

RENDERED = {  # step -> {output: KFP artifact type the UI renders}
    "validate-data": {"data_docs": "system.HTML", "summary": "system.Markdown"},
    "augment": {"preview": "system.HTML"},
    "hpo-select": {"trials": "system.Markdown", "plot": "system.HTML", "metrics": "system.Metrics"},
    "train": {"curves": "system.HTML", "metrics": "system.Metrics"},
    "compress": {"metrics": "system.Metrics", "report": "system.Markdown"},
    "evaluate": {"metrics": "system.Metrics", "classification": "system.ClassificationMetrics",
                 "report": "system.Markdown"},
    "deploy": {"smoke_metrics": "system.Metrics", "report": "system.Markdown"},
}
HTML_ARTIFACTS = [(step, name) for step, outputs in RENDERED.items() for name, kind in outputs.items()
                  if kind == "system.HTML"]


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    path = compile_pipeline(load_config("full", CLUSTER_OVERRIDES), tmp_path_factory.mktemp("ir") / "p.yaml")
    return next(yaml.safe_load_all(path.read_text()))["components"]


@pytest.mark.parametrize("step", RENDERED)
def test_the_compiled_ir_declares_the_artifact_types_the_ui_renders(components, step):
    outputs = components[f"comp-{step}-component"]["outputDefinitions"]["artifacts"]
    declared = {name: output["artifactType"]["schemaTitle"] for name, output in outputs.items()}
    assert RENDERED[step].items() <= declared.items()


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        pytest.fail("chromium is missing: `make test` installs Debian's chromium (apt-get install chromium)")


@pytest.mark.slow
@pytest.mark.parametrize("step, output", HTML_ARTIFACTS)
def test_every_html_artifact_of_a_run_renders_with_nothing_broken(successful_run, browser, step, output):
    page = open_page(Path(successful_run.artifact(step, output)["uri"]))
    assert page.problems == []
    assert page.text.strip()  # it shows something (pictures are checked above: each one decoded)


@pytest.mark.slow
def test_the_data_docs_page_keeps_its_validation_results(successful_run, browser):
    page = open_page(Path(successful_run.artifact("validate-data", "data_docs")["uri"]))
    assert "Expectation Validation Result" in page.text and "Successful Expectations" in page.text


def test_the_browser_check_itself_sees_a_missing_image_and_a_script_error(tmp_path, browser):
    broken = tmp_path / "broken"
    broken.write_text("<html><body><p>text</p><img src='missing.png'>"
                      "<script>undefinedFunction()</script></body></html>")
    page = open_page(broken)
    assert any("missing.png" in problem for problem in page.failed_requests + page.broken_images)
    assert any("undefinedFunction" in error for error in page.script_errors)
