"""What `aimass run` shows while the DAG runs: each step's process is run, logged and judged by the local runner
(a real subprocess here), and a terminal shows one live line per running step with its latest progress."""
import io
import json
import sys

from rich.console import Console

from aimass.pipelines.local_run import StepLogs, StepRecord, StepWatcher
from aimass.cli.run_summary import LiveRunView


class RecordingWatcher(StepWatcher):
    def __init__(self):
        self.events = []

    def started(self, step):
        self.events.append(("started", step))

    def progressed(self, step, text):
        self.events.append(("progressed", step, text))

    def finished(self, step):
        self.events.append(("finished", step.name, step.status))


def task_command(tmp_path, script: str) -> list[str]:
    """A step's command line as kfp.local builds it: the executor input names the task's output file."""
    output = tmp_path / "train-component" / "executor_output.json"
    output.parent.mkdir()
    return [sys.executable, "-c", script.replace("OUTPUT", str(output)), "--executor_input",
            json.dumps({"outputs": {"outputFile": str(output)}})]


def test_a_steps_progress_lines_reach_the_watcher_and_the_rest_only_its_log(tmp_path):
    watcher = RecordingWatcher()
    command = task_command(tmp_path, "print('loading'); print('aimass-progress: epoch 1/3 done, 812 images/s'); "
                                     "open('OUTPUT', 'w').write('{}')")
    assert StepLogs(verbose=False, watcher=watcher)(command) == 0
    assert watcher.events == [("started", "train"), ("progressed", "train", "epoch 1/3 done, 812 images/s"),
                              ("finished", "train", "SUCCESS")]
    assert "loading" in (tmp_path / "logs" / "train.log").read_text()


def test_a_step_that_exits_without_writing_its_outputs_failed_whatever_its_exit_status(tmp_path):
    watcher = RecordingWatcher()
    assert StepLogs(verbose=False, watcher=watcher)(task_command(tmp_path, "print('died quietly')")) == 1
    assert watcher.events[-1] == ("finished", "train", "FAILURE")
    assert "wrote no executor output" in (tmp_path / "logs" / "train.log").read_text()


def test_a_failing_step_keeps_its_own_exit_status(tmp_path):
    watcher = RecordingWatcher()
    assert StepLogs(verbose=False, watcher=watcher)(task_command(tmp_path, "raise SystemExit(3)")) == 3
    assert watcher.events[-1] == ("finished", "train", "FAILURE")


def screen_and_console(terminal: bool) -> tuple[io.StringIO, Console]:
    screen = io.StringIO()
    return screen, Console(file=screen, force_terminal=terminal, width=120)


def test_a_terminal_shows_a_live_line_per_running_step_then_its_final_line():
    screen, console = screen_and_console(terminal=True)
    with LiveRunView(console) as view:
        view.started("train")
        view.progressed("train", "epoch 2/3 done, 900 images/s")
        view.live.refresh()
        assert "train" in screen.getvalue() and "epoch 2/3 done, 900 images/s" in screen.getvalue()
        view.finished(StepRecord("train", "SUCCESS", 12.5))
    assert "SUCCESS" in screen.getvalue() and "12.5 s" in screen.getvalue()


def test_off_a_terminal_only_finished_steps_are_printed():
    screen, console = screen_and_console(terminal=False)
    with LiveRunView(console) as view:
        view.started("train")
        view.progressed("train", "epoch 2/3 done")
        view.finished(StepRecord("train", "SUCCESS", 12.5))
    assert screen.getvalue().splitlines() == [f"{'train':<22} SUCCESS     12.5 s"]
