"""The command line: parse options, call the runner, map results to exit codes.

No protocol here. Only typer is imported at the top, so `--version` and `--help` stay fast;
each command imports what it needs when it runs.
"""

import sys
from enum import Enum
from typing import List, Optional

import typer

from comfy_cli import __version__

DEFAULT_URL = "http://127.0.0.1:8188"

# `--help` panels: the same on every command that has such options (run has them all).
WHAT = "What to run"
OUTPUT = "Output"
BATCH = "Batch"
SERVERS = "Servers"
LIMITS = "Limits"
CONNECTION = "Connection"

EXIT_CODES = """Exit codes: 0 all prompts succeeded; 1 a prompt failed or was interrupted on the server;
2 invalid input (usage, unreadable or malformed workflow, rejected by the server's validation);
3 --timeout or --deadline passed; 4 the server could not be reached or used, or a prompt was lost;
130 cancelled (Ctrl-C); 143 terminated (SIGTERM). With several prompts the most serious code wins."""

class _Group(typer.core.TyperGroup):
    """typer's command group, saying "Did you mean ...?" once: click 8.4+ suggests a command
    itself (its error's `possibilities`), and typer adds its own to the message."""

    def resolve_command(self, ctx, args):
        import click

        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            if getattr(exc, "possibilities", None) and " Did you mean" in exc.message:
                exc.message = exc.message[:exc.message.index(" Did you mean")]
            raise


app = typer.Typer(
    cls=_Group,
    add_completion=True,  # --install-completion, --show-completion (bash, zsh, fish, PowerShell)
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Run ComfyUI API workflows from shell scripts and CI, with live progress and honest exit codes.",
)


class Progress(str, Enum):
    auto = "auto"
    bars = "bars"
    lines = "lines"
    none = "none"


def _say(text):
    """A line on stdout, through the redacting writer (typer.echo may go around it: click
    writes to the byte buffer underneath when the stream's encoding is ASCII)."""
    sys.stdout.write(text + "\n")


def _version(value: bool):
    if value:
        _say(f"comfy-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
):
    pass


class _Options:
    """Options several commands share, declared once: each class attribute is one option
    (`name: type = typer.Option(...)`), in `--help` order. A command parameter annotated with
    such a class stands for all of them (see `_grouped`); the command gets one instance, holding
    their values as attributes of the same names."""

    def __init__(self, **values):
        for name, value in values.items():
            setattr(self, name, value)

    @classmethod
    def fields(cls):
        """name -> type, in order: a subclass may give a field of its base another option."""
        import typing

        return typing.get_type_hints(cls)

    @classmethod
    def parameters(cls):
        import inspect

        return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=getattr(cls, name))
                for name, kind in cls.fields().items()]


def _grouped(command):
    """`command` as typer should see it: each parameter annotated with an `_Options` class is
    replaced, where it stands, by that class's options; the command is called with one
    instance of the class holding their values."""
    import functools
    import inspect

    groups, params = {}, []
    for param in inspect.signature(command).parameters.values():
        if isinstance(param.annotation, type) and issubclass(param.annotation, _Options):
            groups[param.name] = param.annotation
            params.extend(param.annotation.parameters())
        else:
            params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def call(**values):
        for name, group in groups.items():
            values[name] = group(**{field: values.pop(field) for field in group.fields()})
        return command(**values)

    call.__signature__ = inspect.Signature(params)
    call.__annotations__ = {param.name: param.annotation for param in params}
    return call


URL_OPTION = typer.Option(None, "--url", envvar="COMFY_URL", show_envvar=True, metavar="URL",
                          rich_help_panel=CONNECTION, help=f"ComfyUI server address (default {DEFAULT_URL}). A HOST alone means http://HOST:8188, "
                               "ComfyUI's port; a scheme without a port keeps the scheme's (https://HOST is 443).")
DEBUG_OPTION = typer.Option(False, "--debug", rich_help_panel=OUTPUT, help="Show tracebacks for errors.")


class _Conn(_Options):
    """How to reach the server: credentials and TLS. --insecure warns once, when the first
    connection is about to be made."""

    token: Optional[str] = typer.Option(None, "--token", envvar="COMFY_TOKEN", show_envvar=True, metavar="TOKEN",
                                        rich_help_panel=CONNECTION,
                                        help="Send 'Authorization: Bearer TOKEN' on every request.")
    header: List[str] = typer.Option([], "--header", metavar="'NAME: VALUE'", rich_help_panel=CONNECTION,
                                     help="An extra header on every request (repeatable).")
    ca_bundle: Optional[str] = typer.Option(None, "--ca-bundle", metavar="FILE", rich_help_panel=CONNECTION,
                                            help="Check the server's TLS certificate against these CA certificates.")
    insecure: bool = typer.Option(False, "--insecure", rich_help_panel=CONNECTION,
                                  help="Do not check TLS certificates (a warning is printed).")

    warned = False

    def options(self):
        """The runner's (and a Client's) connection settings."""
        if self.insecure and not self.warned:
            import urllib3

            self.warned = True
            sys.stderr.write("comfy-cli: warning: --insecure: TLS certificates are not checked\n")
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # warned once, here
        return {"token": self.token, "headers": tuple(self.header), "ca_bundle": self.ca_bundle,
                "insecure": self.insecure}

    def client(self, url):
        from comfy_cli.client import Client

        return Client(url, **self.options())


class _SocketConn(_Conn):
    """The same, for commands that open a websocket (`run`, `wait`): credentials go on it too."""

    token: Optional[str] = typer.Option(None, "--token", envvar="COMFY_TOKEN", show_envvar=True, metavar="TOKEN",
                                        rich_help_panel=CONNECTION,
                                        help="Send 'Authorization: Bearer TOKEN' on every request and the websocket.")
    header: List[str] = typer.Option([], "--header", metavar="'NAME: VALUE'", rich_help_panel=CONNECTION,
                                     help="An extra header on every request and the websocket (repeatable).")


# What makes the batch (`run`, `submit`), read by `_load`.
WORKFLOWS_ARG = typer.Argument(..., metavar="WORKFLOW...",
                               help="Workflow files, API or UI format; '-' reads one from stdin.")
COUNT_OPTION = typer.Option(1, "--count", min=1, max=100000, metavar="N", rich_help_panel=BATCH,
                            help="Submit each prompt N times; copy i gets seed/noise_seed + i.")
SAME_SEED_OPTION = typer.Option(False, "--same-seed", rich_help_panel=BATCH, help="With --count: keep the seeds equal.")
SHARD_OPTION = typer.Option(None, "--shard", metavar="K/N|auto", rich_help_panel=BATCH,
                            help="Run only slice K of N of the batch (prompt i when i mod N = K-1), for N jobs of "
                                 "a CI matrix or a cluster: no overlap, no gap. auto: K and N from the engine's variables "
                                 "(GitLab, CircleCI, Buildkite, Slurm array, Kubernetes Indexed Job, COMFY_SHARD).")


class _What(_Options):
    """What goes into each prompt, and --dry-run."""

    sets: List[str] = typer.Option([], "--set", metavar="NODE.INPUT=VALUE", rich_help_panel=WHAT,
                                   help="Set an input (repeatable). NODE: id, _meta.title, or a class_type that "
                                        "occurs once. VALUE: JSON if it parses, else a string.")
    inputs: List[str] = typer.Option([], "--input", metavar="NODE.INPUT=PATH", rich_help_panel=WHAT,
                                     help="Upload a local file and point the input at it (repeatable). A folder or "
                                          "a quoted glob ('photos/*.png') makes one prompt per file, sorted by name.")
    params: Optional[str] = typer.Option(None, "--params", metavar="FILE", rich_help_panel=WHAT,
                                         help="One prompt per row of a CSV/TSV (header row), JSONL or JSON array "
                                              "file; keys NODE.INPUT as for --set, @NODE.INPUT a local file to "
                                              "upload, name the prompt's name.")
    sweeps: List[str] = typer.Option([], "--sweep", metavar="NODE.INPUT=V1,V2,...", rich_help_panel=WHAT,
                                     help="One prompt per value (repeatable: every combination). Values as for "
                                          "--set, or a JSON array, or a range START..END:STEP.")
    dry_run: bool = typer.Option(False, "--dry-run", rich_help_panel=WHAT,
                                 help="Convert and check every prompt against the server's /object_info and list "
                                      "them; submit nothing (exit 0 if fine, 2 if not).")


class _Shown(_Options):
    """How a run is followed and reported (`run`, `wait`)."""

    json_out: bool = typer.Option(False, "--json", rich_help_panel=OUTPUT,
                                  help="Print one JSON summary of every prompt on stdout.")
    progress: Progress = typer.Option(Progress.auto, "--progress", rich_help_panel=OUTPUT,
                                      help="auto: bars on a terminal, lines otherwise.")
    output_dir: Optional[str] = typer.Option(None, "--output-dir", metavar="DIR", rich_help_panel=OUTPUT,
                                             help="Download every output file into DIR; stdout lists the paths.")
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=OUTPUT, help="Replace existing files in "
                                   "--output-dir, --junit and --report (default: never).")
    include_temp: bool = typer.Option(False, "--include-temp", rich_help_panel=OUTPUT,
                                      help="Also list or download temp/preview outputs.")
    expect: Optional[str] = typer.Option(None, "--expect", metavar="DIR", rich_help_panel=OUTPUT,
                                         help="Compare every output with its expected file, DIR/NAME/NODE_INDEX.EXT: "
                                              "images pixel by pixel within --tolerance, other files byte for "
                                              "byte. A prompt whose outputs differ, or have no expected file, ends "
                                              "'mismatch' (exit 1).")
    tolerance: Optional[str] = typer.Option(None, "--tolerance", metavar="MEAN[,SHARE%]", rich_help_panel=OUTPUT,
                                            help="With --expect: the largest mean difference of an image (levels "
                                                 "of 0..255) and share of its pixels off by more than 32 levels "
                                                 "(default 2.0,1%).")
    update_expected: bool = typer.Option(False, "--update-expected", rich_help_panel=OUTPUT,
                                         help="With --expect: write this run's outputs into DIR where they are "
                                              "missing or differ, and remove expected files no output has.")
    events: bool = typer.Option(False, "--events", rich_help_panel=OUTPUT,
                                help="Print NDJSON events on stdout as things happen; the last is the summary.")
    junit: Optional[str] = typer.Option(None, "--junit", metavar="FILE", rich_help_panel=OUTPUT,
                                        help="Write a JUnit XML report, one testcase per prompt.")
    html_report: Optional[str] = typer.Option(None, "--report", metavar="FILE", rich_help_panel=OUTPUT,
                                              help="Write an HTML report to FILE (.html) (self-contained: a summary, "
                                                   "the outputs, a grid of what varies, every prompt), rewritten "
                                                   "every few seconds during the run.")
    verbose: bool = typer.Option(False, "-v", "--verbose", rich_help_panel=OUTPUT,
                                 help="Show server tracebacks of failed nodes.")

    def options(self):
        """Checked (a usage error for a bad combination or file) -> the runner's settings."""
        if self.json_out and self.events:
            raise _usage("--json and --events cannot be used together: --events ends with the summary")
        _check_report_file(self.junit, self.overwrite)
        tolerance = _expect_options(self.expect, self.tolerance, self.update_expected)
        _check_html_report(self.html_report, self.overwrite, self.output_dir)
        return {"progress": self.progress.value, "json": self.json_out, "output_dir": self.output_dir,
                "overwrite": self.overwrite, "include_temp": self.include_temp, "expect": self.expect,
                "tolerance": tolerance, "update_expected": self.update_expected, "events": self.events,
                "junit": self.junit, "report": self.html_report, "verbose": self.verbose}


# Limits and the socket's watch (`run`, `wait`).
TIMEOUT_OPTION = typer.Option(None, "--timeout", min=0.001, metavar="S", rich_help_panel=LIMITS,
                              help="Give up after S seconds with nothing new from the server.")
DEADLINE_OPTION = typer.Option(None, "--deadline", min=0.001, metavar="S", rich_help_panel=LIMITS,
                               help="Give up S seconds after the start, whatever happens.")
SILENCE_OPTION = typer.Option(15.0, "--silence-check", min=0.1, metavar="S", rich_help_panel=CONNECTION,
                              help="Check over HTTP when the websocket has been quiet for S seconds while prompts "
                                   "are open.")


class _Servers(_Options):
    """Where `run` runs its batch."""

    urls: List[str] = typer.Option([], "--url", envvar="COMFY_URL", show_envvar=True, metavar="URL",
                                   rich_help_panel=SERVERS,
                                   help=f"ComfyUI server address (default {DEFAULT_URL}). A HOST alone means "
                                        "http://HOST:8188, ComfyUI's port; a scheme without a port keeps the "
                                        "scheme's (https://HOST is 443). Repeat it (or separate with commas) to "
                                        "spread the batch over several servers.")
    simulate: bool = typer.Option(False, "--simulate", rich_help_panel=SERVERS,
                                  help="Run against the built-in simulator on a free loopback port.")
    per_server: Optional[int] = typer.Option(None, "--per-server", min=1, metavar="K", rich_help_panel=SERVERS,
                                             help="With several servers: at most K of ours waiting on one server "
                                                  "at once (default 2; one server: no limit).")
    failover_after: float = typer.Option(20.0, "--failover-after", min=0.1, metavar="S", rich_help_panel=SERVERS,
                                         help="With several servers: move the prompts that had not started off "
                                              "a server that has not answered for S seconds.")

    def named(self, ctx):
        """The servers --url names, checked (the default server if none); --simulate wins over
        $COMFY_URL but not over a --url given on the command line."""
        if self.simulate and self.urls and ctx.get_parameter_source("urls").name != "ENVIRONMENT":
            raise _usage("--simulate and --url cannot be used together")
        return _servers([] if self.simulate else self.urls)


RETRY_OPTION = typer.Option(0, "--retry", min=0, metavar="N", rich_help_panel=BATCH,
                            help="Send a prompt that failed, was lost or ended in error again, up to N times, on "
                                 "another server when there is one.")
JOURNAL_OPTION = typer.Option(None, "--journal", metavar="FILE", rich_help_panel=BATCH,
                              help="Record what was submitted where and how it ended (append-only, fsynced). Run "
                                   "the same command again with it after a crash to take the batch up: nothing "
                                   "runs twice.")
NO_CANCEL_OPTION = typer.Option(False, "--no-cancel", rich_help_panel=LIMITS,
                                help="On Ctrl-C or a time limit, leave our prompts on the server.")
RUN_POLL_OPTION = typer.Option(1.0, "--poll-interval", min=0.05, metavar="S", rich_help_panel=CONNECTION,
                               help="While the websocket is down, check /queue and /history every S seconds.")


@app.command(epilog=EXIT_CODES)
@_grouped
def run(
    ctx: typer.Context,
    workflows: List[str] = WORKFLOWS_ARG,
    *,
    what: _What,
    shown: _Shown,
    debug: bool = DEBUG_OPTION,
    count: int = COUNT_OPTION,
    same_seed: bool = SAME_SEED_OPTION,
    retry: int = RETRY_OPTION,
    shard: Optional[str] = SHARD_OPTION,
    journal: Optional[str] = JOURNAL_OPTION,
    servers: _Servers,
    timeout: Optional[float] = TIMEOUT_OPTION,
    deadline: Optional[float] = DEADLINE_OPTION,
    no_cancel: bool = NO_CANCEL_OPTION,
    poll_interval: float = RUN_POLL_OPTION,
    silence_check: float = SILENCE_OPTION,
    conn: _SocketConn,
):
    """Submit workflows, show live progress, wait until every prompt has ended.

    WORKFLOW: a workflow file, API or UI format; '-' reads one from stdin."""
    with _guard(debug):
        settings = shown.options()
        urls = servers.named(ctx)
        slice_ = _shard(shard)
        parts = _load(workflows, what, count, same_seed)
        made = None if parts.ui else _make(parts)  # a mistake is refused before a simulator starts
        sim = _start_simulator() if servers.simulate else None
        try:
            target = sim.url if sim else urls[0]
            if what.dry_run or parts.needs_info:
                made = _with_info(parts, target, conn, what.dry_run, shown.json_out, slice_)
            # Which server can run what: a server without a workflow's node types is not given it.
            node_types = [_node_types(u, conn) for u in urls] if len(urls) > 1 else None
            from comfy_cli.runner import Options, Run

            batch = {"count": count, "same_seed": same_seed, "shard": slice_ and "%d/%d" % slice_,
                     "inputs": what.inputs}
            opts = Options(url=target, urls=tuple([target] + urls[1:]), per_server=servers.per_server, retry=retry,
                           failover_after=servers.failover_after, node_types=node_types,
                           workflows=made.select(slice_), journal=journal, journal_options=batch,
                           batch_key=made.digest() if journal else None, timeout=timeout, deadline=deadline,
                           no_cancel=no_cancel, poll_interval=poll_interval, silence_check=silence_check,
                           uploads=parts.fixed, plan=_plan_record(made, slice_) if shown.output_dir else None,
                           **settings, **conn.options())
            runner = Run(opts)
            code = runner.execute()
            if sim and runner.urls_printed:
                sys.stderr.write("comfy-cli: note: the simulator stops with this command, so its /view URLs above "
                                 "no longer answer; add --output-dir DIR to keep the files\n")
        finally:
            if sim:
                sim.stop()
        raise typer.Exit(code)


class _Parts:
    """A batch's files and options, read and checked, before any server is asked."""

    def __init__(self, workflows, assignments, fixed, axes, count, same_seed):
        self.workflows, self.assignments, self.fixed, self.axes = workflows, assignments, tuple(fixed), axes
        self.count, self.same_seed = count, same_seed
        self.ui = any(wf.ui is not None for wf in workflows)
        # UI-format files need the server's node types; data is checked against them.
        self.needs_info = self.ui or bool(axes)


def _load(workflows, what, count, same_seed):
    """The batch options of `run` and `submit` -> _Parts: every file read, every option parsed."""
    from comfy_cli import batch, plan, workflow
    from comfy_cli import params as data

    if workflows.count("-") > 1:
        raise _usage("WORKFLOW: '-' (stdin) can be given only once")
    loaded = [workflow.load(path) for path in workflows]
    assignments = [batch.parse_assignment("--set", spec) for spec in what.sets]
    axes, fixed = [], []
    if what.params:
        axes.append(plan.rows(data.read(what.params)))
    for spec in what.inputs:
        axis = plan.input_files(spec)
        if axis is None:
            fixed.append(batch.parse_assignment("--input", spec, as_path=True))
        else:
            axes.append(axis)
    axes.extend(plan.sweep(spec) for spec in what.sweeps)
    return _Parts(loaded, assignments, fixed, axes, count, same_seed)


def _make(parts, info=None, dry_run=False):
    """convert (with the server's /object_info) -> --set and --input -> the Plan; with `info`,
    every value of the data is checked against it too (a dry run checks every prompt whole)."""
    from comfy_cli import batch, plan, workflow

    loaded = [workflow.convert(wf, info) for wf in parts.workflows] if info is not None else parts.workflows
    made = plan.Plan(batch.apply(loaded, list(parts.assignments) + list(parts.fixed)), parts.axes, parts.count,
                     parts.same_seed)
    if info is not None and parts.axes and not dry_run:
        made.check_values(info)
    return made


def _with_info(parts, url, conn, dry_run, json_out, slice_):
    """The plan made with the server's /object_info (UI-format files, data to check); a dry run
    ends here, with its exit code."""
    info = _fetch_object_info(url, conn)
    made = _make(parts, info, dry_run)
    if dry_run:
        raise typer.Exit(_dry_run(made, info, json_out, slice_))
    return made


@app.command(epilog="Exit codes: 0 converted; 2 a bad or unconvertible file, or FILE exists; 4 the server "
                   "could not be reached.")
@_grouped
def convert(
    ctx: typer.Context,
    path: str = typer.Argument(..., metavar="WORKFLOW", help="A UI-format (or API-format) workflow; '-' reads "
                                                             "stdin."),
    *,
    url: Optional[str] = URL_OPTION,
    object_info_file: Optional[str] = typer.Option(None, "--object-info", metavar="FILE",
                                                   help="Read node types from a saved /object_info instead of "
                                                        "asking the server."),
    output: Optional[str] = typer.Option(None, "-o", "--output", metavar="FILE", rich_help_panel=OUTPUT,
                                         help="Write the API-format JSON to FILE instead of stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=OUTPUT,
                                   help="Replace FILE if it exists (default: never)."),
    conn: _Conn,
    debug: bool = DEBUG_OPTION,
):
    """Convert a UI-format workflow (what ComfyUI's Save writes) to API format, as the ComfyUI page would."""
    with _guard(debug):
        import json

        from comfy_cli import workflow

        if object_info_file and url and ctx.get_parameter_source("url").name != "ENVIRONMENT":
            raise _usage("--url and --object-info cannot be used together")
        if output:
            _check_output_file("-o", output, overwrite)
        wf = workflow.load(path)
        if wf.ui is not None:
            if object_info_file:
                info = _read_object_info(object_info_file)
            else:
                info = _fetch_object_info(url or DEFAULT_URL, conn)
            wf = workflow.convert(wf, info, strict=False)  # what the page would send, with a warning
        from comfy_cli.errors import ascii_only

        text = json.dumps(wf.graph, indent=2, ensure_ascii=output is None and ascii_only(sys.stdout)) + "\n"
        if output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        from comfy_cli.outputs import write_new

        try:
            write_new(output, lambda fh: fh.write(text.encode("utf-8")), overwrite=overwrite)
        except FileExistsError:
            raise _usage(f"-o {output}: the file exists; add --overwrite to replace it") from None
        except OSError as exc:
            raise _usage(f"-o {output}: cannot write: {exc.strerror or exc}") from None


STATUS_URLS_OPTION = typer.Option([], "--url", envvar="COMFY_URL", show_envvar=True, metavar="URL",
                                  rich_help_panel=CONNECTION,
                                  help=f"ComfyUI server address (default {DEFAULT_URL}). A HOST alone means "
                                       "http://HOST:8188, ComfyUI's port; a scheme without a port keeps the scheme's "
                                       "(https://HOST is 443). Repeat it (or separate with commas) to ask several "
                                       "servers.")
STATUS_EXIT = "Exit codes: 0 a server answered (with several, at least one); 4 none could be reached or used."


@app.command(epilog=STATUS_EXIT)
@_grouped
def status(
    *,
    urls: List[str] = STATUS_URLS_OPTION,
    json_out: bool = typer.Option(False, "--json", rich_help_panel=OUTPUT,
                                  help="Print the answer as JSON (schema comfy-cli.status/1)."),
    conn: _Conn,
    debug: bool = DEBUG_OPTION,
):
    """Is each server reachable? Its version, devices, and how many prompts run and wait.
    Exit 4 only if none answers."""
    with _guard(debug):
        import json

        from comfy_cli.errors import ServerError

        docs, problems = [], []
        for url in _servers(urls):
            client = conn.client(url)
            try:
                info = client.server_info()
            except ServerError as exc:
                docs.append({"server": client.base, "reachable": False, "error": str(exc)})
                problems.append(exc)
                continue
            finally:
                client.close()
            docs.append({"server": client.base, "reachable": True, "version": info["version"],
                         "devices": info["devices"],
                         "queue": {"running": info["running"], "pending": info["pending"]}})
            if not json_out:
                _say(f"{client.base}: reachable, ComfyUI {info['version'] or 'of unknown version'}"
                           + (f" on {', '.join(info['devices'])}" if info["devices"] else ""))
                _say(f"queue: {info['running']} running, {info['pending']} pending")
        if json_out:
            doc = dict(docs[0]) if len(docs) == 1 else {"servers": docs}
            _say(json.dumps({"schema": "comfy-cli.status/1", **doc}, indent=2))
        # Each problem once, on stderr (--json has it too); an error only if no server answers.
        kind = "error" if len(problems) == len(docs) else "warning"
        for exc in problems:
            sys.stderr.write(f"comfy-cli: {kind}: {exc}\n")
        if len(problems) == len(docs):
            raise typer.Exit(problems[0].exit_code)  # none answers: exit 4


@app.command(epilog="Exit codes: 0 stopped with Ctrl-C or SIGTERM; 2 bad options, the port cannot be listened on, "
                    "or aiohttp (the [sim] extra) is missing.")
def sim(
    port: int = typer.Option(8188, "--port", min=0, max=65535, metavar="PORT",
                             help="Port to listen on (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", metavar="HOST", help="Address to listen on."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", metavar="DIR",
                                             help="Where SaveImage writes (default: a temporary folder)."),
    token: Optional[str] = typer.Option(None, "--token", metavar="TOKEN",
                                        help="Require 'Authorization: Bearer TOKEN'."),
    tls_cert: Optional[str] = typer.Option(None, "--tls-cert", metavar="FILE", help="Serve https/wss with this "
                                                                                   "certificate (needs --tls-key)."),
    tls_key: Optional[str] = typer.Option(None, "--tls-key", metavar="FILE", help="The certificate's key."),
    debug: bool = DEBUG_OPTION,
):
    """Run the built-in ComfyUI simulator in the foreground (Ctrl-C stops it)."""
    with _guard(debug):
        serve = _sim_module().serve
        if bool(tls_cert) != bool(tls_key):
            raise _usage("--tls-cert and --tls-key go together")
        try:
            serve(host=host, port=port, output_dir=output_dir, token=token,
                  tls=(tls_cert, tls_key) if tls_cert else None)
        except OSError as exc:
            raise _usage(f"--port {port}: cannot listen on {host}: {exc.strerror or exc}") from None


SUBMIT_EXIT = """Exit codes: 0 every prompt is on the server; 2 invalid input or a prompt rejected by the server's
validation (the others are still submitted and printed); 4 the server could not be reached or used."""


@app.command(epilog=SUBMIT_EXIT)
@_grouped
def submit(
    workflows: List[str] = WORKFLOWS_ARG,
    *,
    url: Optional[str] = URL_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document with every prompt's handle."),
    what: _What,
    count: int = COUNT_OPTION,
    same_seed: bool = SAME_SEED_OPTION,
    shard: Optional[str] = SHARD_OPTION,
    conn: _Conn,
    debug: bool = DEBUG_OPTION,
):
    """Submit workflows and exit at once, printing one handle per prompt for `wait` and `cancel`."""
    with _guard(debug):
        import uuid

        parts = _load(workflows, what, count, same_seed)
        slice_ = _shard(shard)
        target = url or DEFAULT_URL
        if what.dry_run or parts.needs_info:
            made = _with_info(parts, target, conn, what.dry_run, json_out, slice_)
        else:
            made = _make(parts)
        from comfy_cli.runner import Options, Run

        client_id = str(uuid.uuid4())  # one per submit: one `wait` socket gets the progress of them all
        opts = Options(url=target, workflows=made.select(slice_), progress="none", uploads=parts.fixed,
                       client_id=client_id, socket=False, submit_only=True, no_cancel=True, detach_on_signal=True,
                       **conn.options())
        from comfy_cli.errors import ServerError

        run = Run(opts)
        fatal = None
        try:
            code = run.execute()
        except ServerError as exc:  # the run broke off (e.g. no server): still say what was sent
            fatal, code = exc, exc.exit_code
        _submitted(run, client_id, code, fatal, json_out)
        if fatal is not None:
            raise fatal
        raise typer.Exit(code)


def _submitted(run, client_id, code, fatal, json_out):
    """What `submit` prints: a handle per prompt on the server, and remembers them for `queue`."""
    import json

    from comfy_cli import handles
    from comfy_cli import tracker as tr

    made = []
    for prompt in run.prompts:
        # (DETACHED: on the server when Ctrl-C stopped the submitting; it still gets its handle)
        on_server = prompt.status in (tr.SUBMITTED, tr.RUNNING, tr.DETACHED) or prompt.status in tr.SERVER_ENDS
        handle = handles.make(run.client.base, prompt.prompt_id, client_id, prompt.workflow.name) \
            if on_server else None
        made.append((prompt, handle))
    sent = [h for _, h in made if h is not None]
    problem = handles.remember(sent)
    if problem:
        sys.stderr.write(f"comfy-cli: note: {problem}\n")
    if fatal is None:
        not_sent = len(made) - len(sent)
        sys.stderr.write(f"{len(sent)} prompt{'' if len(sent) == 1 else 's'} submitted to {run.client.base}"
                         + (f", {not_sent} not" if not_sent else "") + "\n")
    if json_out:
        doc = {"schema": "comfy-cli.submit/1", "server": run.client.base, "exit_code": code,
               "error": str(fatal) if fatal else None,
               "prompts": [{"workflow": p.workflow.path, "name": p.workflow.name, "prompt_id": p.prompt_id,
                            "client_id": client_id, "handle": h.text() if h else None, "status": p.status,
                            "number": p.number, "error": p.error, "values": p.workflow.values}
                           for p, h in made]}
        _say(json.dumps(doc, indent=2))
    else:
        for _, h in made:
            if h is not None:
                _say(h.text())


WAIT_EXIT = EXIT_CODES.replace("130 cancelled (Ctrl-C)", "130 stopped waiting (Ctrl-C; the prompts run on "
                                                         "unless --cancel)")


# What `wait` and `cancel` act on.
TARGETS_ARG = typer.Argument(..., metavar="HANDLE|PROMPT_ID...",
                             help="Handles printed by `submit`, or prompt ids; '-' reads them from stdin "
                                  "(whitespace-separated).")
HANDLES_URL_OPTION = typer.Option(None, "--url", envvar="COMFY_URL", show_envvar=True, metavar="URL",
                                  rich_help_panel=CONNECTION,
                                  help=f"The server of bare prompt ids (default {DEFAULT_URL}); handles carry their "
                                       "own. With a user:password@, its credentials are used.")


@app.command(epilog=WAIT_EXIT)
@_grouped
def wait(
    targets: List[str] = TARGETS_ARG,
    *,
    url: Optional[str] = HANDLES_URL_OPTION,
    shown: _Shown,
    timeout: Optional[float] = TIMEOUT_OPTION,
    deadline: Optional[float] = DEADLINE_OPTION,
    cancel: bool = typer.Option(False, "--cancel", rich_help_panel=LIMITS,
                                help="On Ctrl-C, SIGTERM or a time limit, cancel the prompts (default: leave "
                                     "them running)."),
    poll_interval: float = typer.Option(1.0, "--poll-interval", min=0.05, metavar="S", rich_help_panel=CONNECTION,
                                        help="Without a websocket, check /queue and /history every S seconds."),
    silence_check: float = SILENCE_OPTION,
    conn: _SocketConn,
    debug: bool = DEBUG_OPTION,
):
    """Wait for prompts submitted earlier: the same progress, outputs, reports and exit codes as `run`.

    HANDLE|PROMPT_ID: what `submit` printed, or a prompt id (a UUID, as `queue` shows it); '-' reads them
    from stdin (whitespace-separated), e.g. `comfy-cli submit x.json | comfy-cli wait -`."""
    with _guard(debug):
        settings = shown.options()
        given = _targets(targets)
        target, client = _server_of(given, url, conn)
        client_ids = {h.client_id for h in given}
        live = len(client_ids) == 1 and None not in client_ids
        try:
            prompts = _followed(client, given)
        finally:
            client.close()
        if not live:
            why = "prompt ids carry no client id" if None in client_ids else \
                "the handles come from different submissions"
            sys.stderr.write(f"comfy-cli: note: step progress is not available ({why}); following by /queue and "
                             f"/history every {poll_interval:g} s\n")
        from comfy_cli.runner import Options, Run

        opts = Options(url=target, workflows=[], prompts=prompts, timeout=timeout, deadline=deadline,
                       no_cancel=not cancel, poll_interval=poll_interval, silence_check=silence_check,
                       client_id=next(iter(client_ids)) if live else None, socket=live, detach_on_signal=not cancel,
                       **settings, **conn.options())
        raise typer.Exit(Run(opts).execute())


def _followed(client, given):
    """The handles' prompts, to follow from where they are on the server: their graphs (so bars
    can name nodes), and what an earlier `cancel` removed (gone from the server, yet not lost)."""
    from comfy_cli import handles
    from comfy_cli import tracker as tr
    from comfy_cli.workflow import Workflow

    graphs = _graphs(client, [h.prompt_id for h in given])
    earlier = handles.cancelled()
    prompts = []
    for h in given:
        prompts.append(tr.Prompt(h.prompt_id, Workflow(h.name, h.name, graphs.get(h.prompt_id, {})), None,
                                 status=tr.SUBMITTED, cancelled_earlier=earlier.get(h.prompt_id)))
    return prompts


CANCEL_EXIT = """Each prompt's line says only what the server confirmed. Exit codes (the most serious wins):
0 every prompt was removed from the queue or interrupted; 1 a prompt was not cancelled: it had ended on its own
(before, or before the interrupt took effect; its end and outputs are printed); 2 a malformed handle or prompt id;
3 a delete or interrupt was sent but not confirmed within --timeout; 4 a prompt the server does not know, or the
server could not be reached."""


@app.command(epilog=CANCEL_EXIT)
@_grouped
def cancel(
    targets: List[str] = TARGETS_ARG,
    *,
    url: Optional[str] = HANDLES_URL_OPTION,
    timeout: float = typer.Option(10.0, "--timeout", min=0.0, metavar="S",
                                  help="Wait at most S seconds for the server to confirm (an interrupt takes "
                                       "effect at the prompt's next check)."),
    conn: _Conn,
    debug: bool = DEBUG_OPTION,
):
    """Cancel prompts: delete them from the queue if pending, interrupt them (and only them) if running.

    HANDLE|PROMPT_ID: what `submit` printed, or a prompt id (a UUID, as `queue` shows it); '-' reads them
    from stdin (whitespace-separated)."""
    with _guard(debug):
        from comfy_cli import cancels, errors, handles

        given = _targets(targets)
        _target, client = _server_of(given, url, conn)
        deleted, interrupted = set(), set()
        earlier = handles.cancelled()
        try:
            try:
                said = cancels.cancel(client, [h.prompt_id for h in given], timeout, deleted, interrupted, earlier)
            finally:
                problem = handles.remember_cancelled(
                    {**{pid: "removed from the queue" for pid in deleted},
                     **{pid: "interrupted on the server" for pid in interrupted}})
                if problem:
                    sys.stderr.write(f"comfy-cli: warning: {problem}\n")
        finally:
            client.close()
        codes = []
        for h in given:
            verdict = said[h.prompt_id]
            codes.append(cancels.EXIT[verdict.kind])
            label = h.prompt_id if h.name == h.prompt_id else f"{h.name} ({h.prompt_id})"
            files = f"; outputs: {' '.join(verdict.files)}" if verdict.files else ""
            _say(f"{label}: {verdict.text}{files}")
        raise typer.Exit(errors.worst(codes))


@app.command(name="queue", epilog="Exit codes: 0 the queue was read; 4 the server could not be reached or used.")
@_grouped
def queue_cmd(
    *,
    url: Optional[str] = URL_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the queue as JSON."),
    conn: _Conn,
    debug: bool = DEBUG_OPTION,
):
    """What runs and waits on the server, with prompt ids; marks the prompts `submit` sent from here."""
    with _guard(debug):
        import json

        from comfy_cli import handles

        client = conn.client(url or DEFAULT_URL)
        try:
            items = client.queue_items()
        finally:
            client.close()
        here = {h.prompt_id: h for h in handles.remembered()}  # random UUIDs: the id alone says it is ours
        # (so the same server under another address, e.g. an SSH tunnel, is still recognised)

        def row(item, state):
            h = here.get(item["prompt_id"])
            return {"prompt_id": item["prompt_id"], "state": state, "number": item["number"],
                    "nodes": len(item["graph"]), "submitted_here": h is not None, "name": h.name if h else None,
                    "handle": h.text() if h else None}

        rows = [row(i, "running") for i in items["running"]] + [row(i, "pending") for i in items["pending"]]
        if json_out:
            _say(json.dumps({"schema": "comfy-cli.queue/1", "server": client.base,
                             "running": [r for r in rows if r["state"] == "running"],
                             "pending": [r for r in rows if r["state"] == "pending"]}, indent=2))
            return
        for r in rows:
            mark = f"  {r['name']} (submitted here)" if r["submitted_here"] else ""
            _say(f"{r['state']:<8} {r['prompt_id']}  {r['nodes']} nodes{mark}")
        _say(f"queue: {len(items['running'])} running, {len(items['pending'])} pending")


MERGE_EXIT = """Exit codes: as `run` would give for the whole batch (0 every prompt succeeded; 1 one failed; ...); 2 a
folder without a manifest, or shards of different batches; 4 a slice or a prompt is missing, or a file or report
could not be written."""


@app.command(epilog=MERGE_EXIT)
def merge(
    folders: List[str] = typer.Argument(..., metavar="DIR...",
                                        help="The shards' --output-dir folders, each with its manifest.jsonl."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", metavar="DIR", rich_help_panel=OUTPUT,
                                             help="Copy every shard's files into DIR and write DIR/manifest.jsonl "
                                                  "(default: the files stay where they are)."),
    html_report: Optional[str] = typer.Option(None, "--report", metavar="FILE", rich_help_panel=OUTPUT,
                                              help="Write one HTML report of the whole batch to FILE (.html; links "
                                                   "to the files by relative path)."),
    junit: Optional[str] = typer.Option(None, "--junit", metavar="FILE", rich_help_panel=OUTPUT,
                                        help="Write one JUnit XML report, one testcase per prompt."),
    json_out: bool = typer.Option(False, "--json", rich_help_panel=OUTPUT,
                                  help="Print the whole batch's JSON summary (as `run --json`)."),
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=OUTPUT,
                                   help="Replace an existing merged manifest, --junit or --report file."),
    debug: bool = DEBUG_OPTION,
):
    """Put the shards of one batch (`run --shard K/N --output-dir DIR`) back together: one manifest,
    JSON summary, JUnit and HTML report, as if one run had made them."""
    with _guard(debug):
        from comfy_cli import mergeio

        folders = mergeio.distinct(folders)
        if output_dir is not None:
            mergeio.prepare(output_dir, folders, overwrite)  # first: the reports may go into it
        for option, path in (("--junit", junit), ("--report", html_report)):
            if path is not None:
                _check_output_file(option, path, overwrite)
        raise typer.Exit(mergeio.execute(folders, output_dir, html_report, junit, json_out, overwrite,
                                         out=sys.stdout, err=sys.stderr))


def _targets(args):
    """Handles and prompt ids from the command line ('-': from stdin), each once, in order."""
    from comfy_cli import handles

    if args.count("-") > 1:
        raise _usage("'-' (stdin) can be given only once")
    words = []
    for arg in args:
        if arg == "-":
            data = sys.stdin.read()
            found = data.split()
            if not found:
                raise _usage("'-': no handles or prompt ids on stdin")
            words.extend(found)
        else:
            words.append(arg)
    out, seen = [], set()
    for word in words:
        h = handles.parse(word)
        if h.prompt_id not in seen:
            seen.add(h.prompt_id)
            out.append(h)
    return out


def _server_of(given, url, conn):
    """The one server all handles and prompt ids name (bare ids: --url) -> (URL to use, Client).
    A --url naming the handles' server lends them its user:password, which handles never carry."""
    from comfy_cli.client import split_url

    default = url or DEFAULT_URL
    base = split_url(default)[0]
    servers = {h.url or base for h in given}
    if len(servers) > 1:
        raise _usage("the handles name different servers (" + ", ".join(sorted(servers)) + "): give each "
                     "server's handles to a separate command")
    server = servers.pop()
    target = default if server == base else server
    return target, conn.client(target)


def _graphs(client, prompt_ids):
    """The prompts' graphs from /queue and /history, so bars can name nodes (best effort: {} if not)."""
    from comfy_cli.errors import ServerError

    graphs = {}
    try:
        items = client.queue_items(retry=False)
        for item in items["running"] + items["pending"]:
            graphs[item["prompt_id"]] = item["graph"]
        for pid in prompt_ids:
            if pid in graphs:
                continue
            entry = client.history(pid, retry=False)
            prompt = entry.get("prompt") if entry else None
            if isinstance(prompt, list) and len(prompt) > 2 and isinstance(prompt[2], dict):
                graphs[pid] = prompt[2]
    except ServerError:
        pass  # the run itself says what is wrong with the server
    return {pid: _clean_graph(graphs[pid]) for pid in prompt_ids if pid in graphs}


def _clean_graph(graph):
    """Only what bars and reports need (node ids, types, titles), as printable text: the server's
    graph is not ours, and a title could hold terminal escape sequences."""
    def text(value):
        value = value if isinstance(value, str) else ""
        return "".join(c if c.isprintable() else "?" for c in value[:200])

    out = {}
    for nid, node in graph.items():
        if isinstance(node, dict):
            meta = node.get("_meta") if isinstance(node.get("_meta"), dict) else {}
            clean = {"class_type": text(node.get("class_type")), "inputs": {}}
            if text(meta.get("title")):
                clean["_meta"] = {"title": text(meta.get("title"))}
            out[text(nid)] = clean
    return out


def _expect_options(expect, tolerance, update):
    """Check --expect, --tolerance and --update-expected; the tolerance (None: the default)."""
    import os

    if expect is None:
        if tolerance is not None or update:
            raise _usage(f"{'--tolerance' if tolerance is not None else '--update-expected'} needs --expect DIR")
        return None
    if os.path.exists(expect) and not os.path.isdir(expect):
        raise _usage(f"--expect {expect}: not a folder")
    if not os.path.exists(expect) and not update:
        raise _usage(f"--expect {expect}: no such folder; add --update-expected to make it from this run's outputs")
    if tolerance is None:
        return None
    from comfy_cli.compare import parse_tolerance

    try:
        return parse_tolerance(tolerance)
    except ValueError as exc:
        raise _usage(f"--tolerance {exc}") from None


def _check_report_file(path, overwrite):
    if path is not None:
        _check_output_file("--junit", path, overwrite)


def _check_html_report(path, overwrite, output_dir):
    """As --junit, but the page may go into --output-dir before that folder exists (the run makes it)."""
    import os

    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if output_dir and not os.path.exists(folder):
        inside = os.path.relpath(folder, os.path.abspath(output_dir))
        if inside == "." or not inside.startswith(".."):
            return
    _check_output_file("--report", path, overwrite)


def _check_output_file(option, path, overwrite):
    import os

    if os.path.isdir(path):
        raise _usage(f"{option} {path}: is a directory")
    if os.path.exists(path) and not overwrite:
        raise _usage(f"{option} {path}: the file exists; add --overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise _usage(f"{option} {path}: no such folder {folder}")


def _servers(urls):
    """--url given 0..n times, each maybe a comma-separated list -> base URLs, checked, no repeats."""
    from comfy_cli.client import split_url

    found = []
    for spec in urls:
        for one in spec.split(","):
            one = one.strip()
            if not one:
                continue
            base, _ = split_url(one)
            if base in [split_url(u)[0] for u in found]:
                raise _usage(f"--url {base}: the same server is named twice")
            found.append(one)
    return found or [DEFAULT_URL]


def _shard(spec):
    """--shard K/N or auto -> (K, N) or None; auto says once on stderr where it found K and N."""
    import os

    from comfy_cli import shard

    found = shard.parse(spec, os.environ)
    if found is None:
        return None
    if found.source:
        sys.stderr.write(f"comfy-cli: shard {found.text()} (from {found.source})\n")
    return found.k, found.n


def _plan_record(made, slice_):
    """The batch as the manifest records it, for `merge`: the plan's fingerprint (what shapes the
    batch, not the server), how many prompts it has, and the slice this run takes."""
    return {"fingerprint": made.digest(), "size": len(made), "shard": "%d/%d" % (slice_ or (1, 1))}


def _node_types(url, conn):
    """The node types a server has, or None if its /object_info cannot be read (then any goes)."""
    from comfy_cli.errors import ServerError

    try:
        return set(_fetch_object_info(url, conn))
    except ServerError:
        return None


def _fetch_object_info(url, conn):
    client = conn.client(url)
    try:
        return client.object_info()
    finally:
        client.close()


def _read_object_info(path):
    import json

    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read().decode("utf-8-sig"))
    except FileNotFoundError:
        raise _usage(f"--object-info {path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _usage(f"--object-info {path}: cannot read it as JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise _usage(f"--object-info {path}: not a /object_info answer (an object of node types)")
    return data


def _dry_run(made, info, json_out, slice_=None):
    """Check every prompt of the plan as the server's validation would, building each graph only
    for its check. With data (or --json) the planned prompts are listed on stdout, one line
    each; problems are printed like a 400 on stderr. Exit code."""
    from comfy_cli import errors, plan, report
    from comfy_cli.shard import indices as shard_indices

    code, listing, lines, bad = errors.OK, [], [], 0
    listed = json_out or bool(made.axes)
    chosen = range(len(made)) if slice_ is None else shard_indices(len(made), *slice_)  # (--shard: its slice)
    for wf in map(made.__getitem__, chosen):
        problems = made.problems(wf, info)
        if listed:
            listing.append(dict(plan.entry(wf), ok=not problems,
                                error=problems["error"]["message"] if problems else None) if json_out
                           else plan.line(wf))
        if problems:
            code, bad = errors.INVALID, bad + 1
            lines.append(f"{wf.name}: would be rejected: {problems['error']['message']}")
            lines += report.node_error_lines(wf, problems["node_errors"])
        elif not listed:
            lines.append(f"{wf.name}: ok ({len(wf.graph)} nodes; dry run, not submitted)")
    if json_out:
        import json

        sys.stdout.write(json.dumps(listing, indent=1, ensure_ascii=errors.ascii_only(sys.stdout)) + "\n")
    elif listing:
        sys.stdout.write("\n".join(listing) + "\n")
    if listed:
        lines.append(f"{len(chosen)} prompt{'' if len(chosen) == 1 else 's'} planned, " + (
            f"{bad} would be rejected" if bad else "all pass the server's /object_info") + " (dry run, nothing sent)")
    if lines:
        sys.stderr.write("\n".join(lines) + "\n")
    return code


def _sim_module():
    try:
        from comfy_cli.sim import server as sim_module  # the part that needs aiohttp
    except ImportError as exc:
        raise _usage(f"the simulator needs aiohttp ({exc}); install with: pip install 'comfy-run-cli[sim]'") from None
    return sim_module


def _start_simulator():
    server = _sim_module().SimServer(host="127.0.0.1", port=0)
    server.start()
    return server


def _usage(message):
    from comfy_cli.errors import UsageError

    return UsageError(message)


class _guard:
    """Turn expected errors into one line on stderr and an exit code; tracebacks only with --debug."""

    def __init__(self, debug):
        self.debug = debug

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, (typer.Exit, SystemExit)):
            return False
        from comfy_cli import errors

        if isinstance(exc, KeyboardInterrupt):
            sys.stderr.write("comfy-cli: cancelled\n")
            raise typer.Exit(errors.SIGINT)
        if self.debug:
            import traceback

            sys.stderr.write("".join(traceback.format_exception(kind, exc, tb)))
        if isinstance(exc, errors.ComfyError):
            sys.stderr.write(f"comfy-cli: error: {exc}\n")
            raise typer.Exit(exc.exit_code)
        hint = "" if self.debug else " (run with --debug for the traceback)"
        sys.stderr.write(f"comfy-cli: internal error: {type(exc).__name__}: {exc}{hint}\n")
        raise typer.Exit(errors.UNREACHABLE)


def _default_sigint():
    """Ctrl-C (SIGINT) always means "cancel this run's prompts", however comfy-cli was started.

    A shell script's background job (`comfy-cli run x &`) starts with SIGINT ignored, and Python
    then installs no handler: a later `kill -INT` would do nothing and the prompts would run on.
    Restore Python's default handler (KeyboardInterrupt), which the runner turns into a clean
    cancel. A run that must survive the terminal's Ctrl-C can be started with `setsid`."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main():
    _default_sigint()
    from comfy_cli import errors

    # One writer for everything the command prints: no output path can show a secret. A
    # character the terminal's encoding lacks is escaped, never an error.
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and callable(getattr(stream, "reconfigure", None)):
            stream.reconfigure(errors="backslashreplace")
    sys.stdout = errors.RedactingWriter(sys.stdout, errors.REDACTOR)
    sys.stderr = errors.RedactingWriter(sys.stderr, errors.REDACTOR)
    try:
        app(prog_name="comfy-cli")
    finally:
        # Everything is done and flushed; spare the interpreter's exit a full garbage-collector
        # pass over every imported object (about 40 ms, most of the time between the last
        # event and the process's exit).
        import gc

        gc.freeze()


if __name__ == "__main__":
    main()
