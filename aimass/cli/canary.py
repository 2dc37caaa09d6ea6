"""`aimass release canary`: a candidate served beside production, judged step by step, promoted or rolled back."""
from __future__ import annotations

import argparse

from aimass.errors import AimassError


def add_canary_command(release_commands, wire) -> None:
    from aimass.canary.controller import ABORTED_EXIT

    canary = release_commands.add_parser(
        "canary", help="serve VERSION beside production in steps; promote it or roll it back by its checks",
        description="Serve VERSION (v<N> or an alias) beside production: first in the shadow (every request is "
                    "also answered by VERSION in the background; callers get production's answer), then with "
                    "--steps percent of the traffic (a request's model is chosen from its request id, so a retry "
                    "lands on the same model). Each step is a release revision and is judged on its own window "
                    "of traffic: errors, p99 latency, agreement of the two models, live accuracy from feedback and "
                    "the candidate's drift (release.canary.*; docs/OPERATIONS.md). One line per step, the verdict "
                    f"last. Exit status: 0 promoted, {ABORTED_EXIT} aborted (production serves alone), 1 refused.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    canary.add_argument("version", nargs="?", help="the candidate: v<N> or an alias")
    canary.add_argument("--steps", default=None, metavar="W,W,...",
                        help="the candidate's traffic weights in percent, increasing, ending at 100 (default: "
                             "release.canary.steps)")
    canary.add_argument("--step-seconds", type=float, default=None, help="each step's window, at least")
    canary.add_argument("--min-requests", type=int, default=None,
                        help="requests the candidate answers before a step is judged")
    canary.add_argument("--shadow", action=argparse.BooleanOptionalAction, default=None,
                        help="a shadow step first (default: release.canary.shadow_first)")
    action = canary.add_mutually_exclusive_group()
    action.add_argument("--abort", action="store_true", help="stop the running canary: production serves alone")
    action.add_argument("--resume", action="store_true",
                        help="go on with the running canary from its current step (after the controller stopped)")
    canary.add_argument("--triggered-by", default=None, help="recorded as the trigger (default: user@host)")
    wire([(canary, _canary)])


def _canary(args: argparse.Namespace) -> int:
    from aimass.canary.analysis import open_metrics_reader
    from aimass.canary.controller import ABORTED_EXIT, abort_by_hand, plan_canary, run_canary, start_canary
    from aimass.canary.plan import PROMOTED, parse_steps
    from aimass.cli.options import config_from_args, print_revision, trigger_from_args
    from aimass.registry import open_registry
    from aimass.releases import open_release_backend

    config = config_from_args(args, args.repo.resolve())
    backend = open_release_backend(config, open_registry(config))
    if args.abort:
        print_revision(abort_by_hand(backend, trigger_from_args(args)))
        return 0
    if bool(args.version) == args.resume:
        raise AimassError("name the candidate VERSION, or --resume the running canary (or --abort it)")
    overrides = {key: value for key, value in (("step_seconds", args.step_seconds),
                                               ("min_requests", args.min_requests)) if value is not None}
    settings = config.release.canary.model_copy(update=overrides)
    if args.resume:
        state = backend.status().running_canary
        if state is None:
            raise AimassError("no canary is running, so there is nothing to resume: `aimass release status`")
    else:
        steps = parse_steps(args.steps) if args.steps else None
        state = plan_canary(backend, open_registry(config), args.version, settings, trigger_from_args(args), steps,
                            args.shadow)
    read_metrics = open_metrics_reader(config)
    read_metrics()  # a controller that cannot see the servers must not start anything
    if not args.resume:
        start_canary(backend, state)
    print(f"canary {state.candidate_version} beside {backend.status().model_version}: steps "
          f"{', '.join('shadow' if weight == 0 else f'{weight}%' for weight in state.weights)}, each at least "
          f"{settings.step_seconds:g} s and {settings.min_requests} requests", flush=True)
    try:
        final = run_canary(backend, state, settings, read_metrics, trigger_from_args(args),
                           lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print(f"stopped watching; the canary of {state.candidate_version} keeps serving at its current step: "
              "`aimass release canary --resume` goes on, `--abort` ends it")
        return 130
    return 0 if final.outcome == PROMOTED else ABORTED_EXIT


def describe_canary(revision) -> str | None:
    """`aimass release status`'s lines for a canary in progress: candidate, step, weight and the checks so far."""
    state = revision.running_canary
    if state is None:
        return None
    lines = [f"canary: {state.candidate_version} at {state.step_label()}, started {state.started_at} by "
             f"{state.started_by}; an abort rolls back to revision {state.base_revision}"]
    for number, result in enumerate(state.results, start=1):
        checks = "; ".join(f"{check['name']} {check['summary']}" for check in result.checks if check["judged"])
        lines.append(f"  step {number} ({'shadow' if result.weight == 0 else f'{result.weight}%'}) passed: "
                     f"{checks or 'nothing judged'}")
    return "\n".join(lines)
