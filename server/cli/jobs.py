"""`trainforge jobs list|get|start|cancel|pause|resume|watch|delete-files`: a gRPC client of
TrainingService's job methods. `watch` follows WatchJob with a progress bar and exits 0 only when the job succeeds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from trainforge.server.cli.common import (
    DEFAULT_SERVER,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    ApiKeyOpt,
    JsonOpt,
    RpcClient,
    ServerOpt,
    console,
    err_console,
    print_json,
    rpc_client,
)
from trainforge.server.cli.tables import (
    duration,
    job_metrics_text,
    job_table,
    jobs_table,
    num,
    state_name,
    styled_state,
    time_text,
)
from trainforge.v1 import training_pb2 as pb
from trainforge.v1 import training_pb2_grpc

app = typer.Typer(help="Training jobs (gRPC TrainingService).", no_args_is_help=True)

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
JobIdArg = Annotated[str, typer.Argument(help="The job's id (a UUID).")]


@contextmanager
def training_client(server: str, api_key: str) -> Iterator[RpcClient]:
    with rpc_client(training_pb2_grpc.TrainingServiceStub, server, api_key) as stub:
        yield stub


def parse_state(text: str) -> int:
    name = text.strip().upper().removeprefix("JOB_STATE_")
    names = [n.removeprefix("JOB_STATE_") for n in pb.JobState.keys() if n != "JOB_STATE_UNSPECIFIED"]
    if name not in names:
        raise typer.BadParameter(f"{text!r} is not one of {', '.join(names)}", param_hint="--state")
    return pb.JobState.Value("JOB_STATE_" + name)


@app.command("list")
def jobs_list(
    state: Annotated[list[str] | None, typer.Option("--state", help="Only jobs in this state; repeatable.")] = None,
    page_size: Annotated[int, typer.Option("--page-size")] = 50,
    page_token: Annotated[str, typer.Option("--page-token", help="From the previous page.")] = "",
    server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    request = pb.ListJobsRequest(states=[parse_state(s) for s in state or ()], page_size=page_size,
                                 page_token=page_token)
    with training_client(server, api_key) as stub:
        reply = stub.ListJobs(request)
    if as_json:
        return print_json(reply)
    console.print(jobs_table(reply))
    if reply.next_page_token:
        console.print(f"more: --page-token {reply.next_page_token}", soft_wrap=True, highlight=False)


@app.command("get")
def jobs_get(job_id: JobIdArg, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "",
             as_json: JsonOpt = False) -> None:
    """Show a job: state, progress, metrics, resources, error or result."""
    with training_client(server, api_key) as stub:
        reply = stub.GetJob(pb.GetJobRequest(job_id=job_id))
    if as_json:
        return print_json(reply)
    console.print(job_table(reply.data))


def _report(job: pb.Job, verb: str) -> None:
    """After start/cancel/pause/resume: the job's state now, or, for a running job, that its
    worker was asked to stop it."""
    if verb in ("cancel", "pause") and state_name(job.status) == "RUNNING":
        then = ("the training stops after saving a checkpoint" if verb == "pause"
                else "the training stops within 10 s and keeps its last checkpoint")
        console.print(f"job {job.job_id}: {verb} requested; {then}")
    else:
        console.print(f"job {job.job_id} is {styled_state(job.status)}")


def _request_transition(job_id: str, server: str, api_key: str, as_json: bool, verb: str) -> None:
    """StartJob / CancelJob / PauseJob / ResumeJob: the RPC named by `verb`, then its report."""
    rpc, request = {"start": ("StartJob", pb.StartJobRequest), "cancel": ("CancelJob", pb.CancelJobRequest),
                    "pause": ("PauseJob", pb.PauseJobRequest), "resume": ("ResumeJob", pb.ResumeJobRequest)}[verb]
    with training_client(server, api_key) as stub:
        reply = getattr(stub, rpc)(request(job_id=job_id))
    return print_json(reply) if as_json else _report(reply.data, verb)


@app.command("start")
def jobs_start(job_id: JobIdArg, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "",
               as_json: JsonOpt = False) -> None:
    """Queue a PENDING job (one created with `train --no-start`)."""
    return _request_transition(job_id, server, api_key, as_json, "start")


@app.command("cancel")
def jobs_cancel(job_id: JobIdArg, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "",
                as_json: JsonOpt = False) -> None:
    """Cancel a job; a running one stops within 10 s and keeps its last checkpoint."""
    return _request_transition(job_id, server, api_key, as_json, "cancel")


@app.command("pause")
def jobs_pause(job_id: JobIdArg, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "",
               as_json: JsonOpt = False) -> None:
    """Pause a queued or running job (a running one checkpoints first)."""
    return _request_transition(job_id, server, api_key, as_json, "pause")


@app.command("resume")
def jobs_resume(job_id: JobIdArg, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "",
                as_json: JsonOpt = False) -> None:
    """Queue a paused job again; it resumes from its last checkpoint."""
    return _request_transition(job_id, server, api_key, as_json, "resume")


@app.command("delete-files")
def jobs_delete_files(job_id: JobIdArg, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "",
                      as_json: JsonOpt = False) -> None:
    """Delete an ended job's working files (checkpoints, logs, output); its registered model stays."""
    with training_client(server, api_key) as stub:
        reply = stub.DeleteJobFiles(pb.DeleteJobFilesRequest(job_id=job_id))
    if as_json:
        return print_json(reply)
    console.print(f"job {job_id}: working files deleted, {reply.bytes_freed:,} bytes freed", soft_wrap=True)


class _WatchView:
    """The progress bar of `jobs watch` and the lines printed above it."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.stats: dict[str, str] = {}
        self.state = ""
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), console=console)
        self.task = self.progress.add_task("waiting", total=None, stats="")

    def show(self, e: pb.JobEvent) -> None:
        kind = pb.JobEventType.Name(e.type).removeprefix("JOB_EVENT_TYPE_")
        state = state_name(e.status)
        p, m = e.progress, e.metrics
        if p.total_steps:
            self.progress.update(self.task, total=p.total_steps, completed=p.current_step)
        for label, field, fmt in (("loss", "train_loss", num), ("eval", "eval_loss", num),
                                  ("tok/s", "tokens_per_sec", lambda v: f"{v:,.0f}")):
            if m.HasField(field):
                self.stats[label] = fmt(getattr(m, field))
        if p.estimated_remaining > 0:
            self.stats["ETA"] = duration(p.estimated_remaining)
        elif state in TERMINAL:
            self.stats.pop("ETA", None)
        stats = "  ".join(f"{k} {v}" if k != "tok/s" else f"{v} {k}" for k, v in self.stats.items())
        self.progress.update(self.task, description=styled_state(e.status), stats=stats)

        when = time_text(e.create_time)[11:]  # the time of day; the date is in `jobs get`
        message = escape(e.message)
        if kind == "STATE_CHANGED" and state != self.state:
            self.progress.console.print(f"{when} {styled_state(e.status)}  {message}")
        elif kind == "CHECKPOINT":
            self.progress.console.print(f"{when} [blue]checkpoint[/] step {p.current_step}  {message}")
        elif kind == "EVALUATION":
            self.progress.console.print(f"{when} evaluation  {escape(job_metrics_text(m))}")
        elif kind == "ERROR":
            self.progress.console.print(f"{when} [red]error[/]  {message}")
        elif kind in ("LOG", "STATE_CHANGED") and message:
            self.progress.console.print(f"[dim]{when} {message}[/]")
        self.state = state


@app.command("watch")
def jobs_watch(job_id: JobIdArg, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "") -> None:
    """Follow a job until it ends: progress bar (steps, loss, tokens/s, ETA), state changes and
    checkpoints. Exit 0 when it succeeds, 1 when it fails or is cancelled."""
    view = _WatchView(job_id)
    try:
        with training_client(server, api_key) as stub:
            with view.progress:
                for reply in stub.stream("WatchJob", pb.WatchJobRequest(job_id=job_id)):
                    view.show(reply.data)
            job = stub.GetJob(pb.GetJobRequest(job_id=job_id)).data
    except KeyboardInterrupt:
        err_console.print(f"stopped watching; job {job_id} goes on (`trainforge jobs watch {job_id}` follows it again)")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    state = state_name(job.status)
    if state == "SUCCEEDED":
        console.print(f"job {job_id} [green]SUCCEEDED[/]"
                      + (f"; registered {escape(job.result_model_version_id)}" if job.result_model_version_id else ""))
        return
    if state in TERMINAL:
        detail = f": {job.error.message}" if job.HasField("error") and job.error.message else ""
        err_console.print(f"job {job_id} {styled_state(job.status)}{escape(detail)}")
    else:
        err_console.print(f"the event stream ended while job {job_id} is {state}")
    raise typer.Exit(EXIT_FAILED)
