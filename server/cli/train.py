"""`trainforge train --config FILE`: reads a fine-tuning template (configs/fine_tune_template.yaml
shape) through the training engine's own loader, converts it to a JobSpec and submits it with
CreateJob. The server validates it again and reports every problem at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from google.protobuf import json_format

from trainforge.core.errors import InvalidArgument
from trainforge.server.cli.common import (
    DEFAULT_SERVER,
    EXIT_USAGE,
    ApiKeyOpt,
    JsonOpt,
    ServerOpt,
    console,
    fail,
    print_json,
)
from trainforge.server.cli.jobs import training_client
from trainforge.server.cli.tables import styled_state
from trainforge.v1 import training_pb2 as pb


def load_job_spec(path: Path) -> pb.JobSpec:
    """The template at `path` as a JobSpec; problems exit 2 with every violation listed."""
    try:
        # Imported here: the training engine's config module is only needed by this command.
        from trainforge.core.training import config as training_config
    except ImportError as exc:
        raise fail(f"cannot read training configs: {exc}",
                   "trainforge.core.training.config (the training engine) is not installed") from None
    try:
        loaded: Any = training_config.load_template(path)
    except InvalidArgument as exc:
        raise fail(f"{path}: invalid training config", *(f"{v.field}: {v.description}" for v in exc.violations),
                   code=EXIT_USAGE) from None
    except (OSError, yaml.YAMLError) as exc:
        raise fail(f"cannot read {path}: {exc}", code=EXIT_USAGE) from None
    as_dict = loaded if isinstance(loaded, dict) else training_config.to_dict(loaded)
    spec = pb.JobSpec()
    try:
        # Through JSON: paths and enums become the strings the proto's JSON form expects.
        json_format.ParseDict(json.loads(json.dumps(as_dict, default=str)), spec)
    except json_format.ParseError as exc:
        raise fail(f"{path} does not map onto a JobSpec: {exc}", code=EXIT_USAGE) from None
    return spec


def train(
    config: Annotated[Path, typer.Option("--config", exists=True, dir_okay=False,
                                         help="Fine-tuning template, e.g. configs/fine_tune_template.yaml.")],
    start: Annotated[bool, typer.Option("--start/--no-start",
                                        help="Queue the job at once, or leave it PENDING for `jobs start`.")] = True,
    server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """Submit a fine-tuning job from a YAML template; prints the job id."""
    spec = load_job_spec(config)
    with training_client(server, api_key) as stub:
        reply = stub.CreateJob(pb.CreateJobRequest(spec=spec, start=start))
    if as_json:
        return print_json(reply)
    job = reply.data
    console.print(f"created job {job.job_id} ({styled_state(job.status)})", highlight=False)
    follow = f"trainforge jobs watch {job.job_id}" if start else f"trainforge jobs start {job.job_id}"
    console.print(f"[dim]next: {follow}[/]", soft_wrap=True)
