"""What a run's end amounts to, from values (pure: no clock, no I/O): the exit code, how many
files, what may be left on a server the run moved prompts away from."""

from typing import NamedTuple

from comfy_cli import errors, report
from comfy_cli import tracker as tr


class End(NamedTuple):
    """The run as its loop left it, gathered once for the summary."""

    names: list  # the servers' base URLs, the first the main one
    outcomes: list  # per server, its supervisor's Outcome
    silent: list  # per server, (monotonic, wall text) since when it has not answered, or None
    attempts: list  # (prompt, dispatch.Attempt) of every attempt, in order (--json, --junit)
    finals: list  # what the exit code and the summary line count
    earlier: dict  # prompt id -> {output key: path}: files of prompts ended in an earlier run


def exit_code(prompts, outcomes, submit_only=False, incomplete=False):
    """The worst of the prompts' codes (a `submit` is done once its prompts are on the server);
    files asked for and missing, or a run that broke off or could not write what was asked
    (`incomplete`), make it at least UNREACHABLE."""
    cancel_code = next((o.signal_code for o in outcomes if o.signal_code), errors.SIGINT)
    codes = [errors.OK if submit_only and p.status in (tr.SUBMITTED, tr.RUNNING)
             else report.exit_code(p, cancel_code) for p in prompts]
    if incomplete or any(o.files_missing for o in outcomes):
        codes.append(errors.UNREACHABLE)
    return errors.worst(codes)


def saved(end):
    """prompt id -> {output key: local path or None}, every server's and the earlier run's."""
    every = dict(end.earlier)
    for outcome in end.outcomes:
        every.update(outcome.saved)
    return every


def files(end, downloading):
    """How many files the run saved (`downloading`) or listed by URL."""
    every = [o.saved for o in end.outcomes] + [end.earlier]
    return sum(1 for one in every for files in one.values() for path in files.values()
               if path is not None or not downloading)


def line(end, downloading, seconds):
    """The summary line on stderr."""
    return report.summary_line(end.finals, files(end, downloading), seconds)


def left_behind(end):
    """One note per server that may still hold prompts moved away from it."""
    notes = []
    for name, outcome, silent in zip(end.names, end.outcomes, end.silent):
        if outcome.not_withdrawn:  # it never answered again, or would not delete them
            why = "did not answer again" if silent else "could not delete them there"
            notes.append(f"{name}: {why}; these prompts moved away from it may still be in its queue: "
                         f"{' '.join(outcome.not_withdrawn)}")
    return notes
