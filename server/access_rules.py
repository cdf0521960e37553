"""Who may call what: one rule per RPC. A rule names the least role that may call it, whether the
call changes state (then it is audited), and which request fields name the resource it touches.
tests/server/test_authorization.py fails for any RPC without a rule here."""

from __future__ import annotations

from dataclasses import dataclass

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Rule:
    role: str  # anonymous, viewer, trainer or admin
    mutating: bool = False
    resource: tuple[str, ...] = ()  # dotted request field paths, joined with "/" for the audit log


def _r(role: str, *resource: str, mutating: bool = False) -> Rule:
    return Rule(role, mutating, resource)


_T, _R, _D = "/trainforge.v1.TrainingService/", "/trainforge.v1.RegistryService/", "/trainforge.v1.DeployService/"

RULES: dict[str, Rule] = {
    # Training: trainers create and run jobs, generate data and evaluate; viewers read.
    _T + "CreateJob": _r("trainer", "spec.name", mutating=True),
    _T + "ListJobs": _r("viewer"),
    _T + "GetJob": _r("viewer", "job_id"),
    _T + "StartJob": _r("trainer", "job_id", mutating=True),
    _T + "CancelJob": _r("trainer", "job_id", mutating=True),
    _T + "PauseJob": _r("trainer", "job_id", mutating=True),
    _T + "ResumeJob": _r("trainer", "job_id", mutating=True),
    _T + "WatchJob": _r("viewer", "job_id"),
    _T + "ListJobEvents": _r("viewer", "job_id"),
    _T + "ListJobCheckpoints": _r("viewer", "job_id"),
    # Trainers only for their own jobs (checked by the servicer against the job's owner key).
    _T + "DeleteJobFiles": _r("trainer", "job_id", mutating=True),
    _T + "GenerateSyntheticData": _r("trainer", "output_path", mutating=True),
    _T + "EvaluateModel": _r("trainer", "model_name", "version", mutating=True),
    _T + "GetTrainingStatistics": _r("viewer"),
    _T + "GetSystemHealth": _r(ANONYMOUS),
    # Registry: trainers register and annotate versions; admins delete and move aliases.
    _R + "RegisterModel": _r("trainer", "model_version.name", "model_version.version", mutating=True),
    _R + "ListModels": _r("viewer"),
    _R + "GetModel": _r("viewer", "model_id"),
    _R + "SearchModels": _r("viewer"),
    _R + "CompareModels": _r("viewer"),
    _R + "UpdateModel": _r("trainer", "model_id", mutating=True),
    _R + "DeleteModel": _r("admin", "model_id", mutating=True),
    _R + "ListModelVersions": _r("viewer", "model_id"),
    _R + "GetModelVersion": _r("viewer", "model_id", "version"),
    _R + "UpdateModelVersion": _r("trainer", "model_id", "version", mutating=True),
    _R + "DeleteModelVersion": _r("admin", "model_id", "version", mutating=True),
    _R + "SetModelAlias": _r("admin", "model_id", "alias", mutating=True),
    _R + "DeleteModelAlias": _r("admin", "model_id", "alias", mutating=True),
    _R + "AttachArtifacts": _r("trainer", "model_id", "version", mutating=True),
    _R + "UploadArtifacts": _r("trainer", "model_id", "version", mutating=True),
    _R + "ListArtifacts": _r("viewer", "model_id", "version"),
    _R + "DownloadArtifact": _r("viewer", "model_id", "version", "path"),
    _R + "VerifyModelVersion": _r("viewer", "model_id", "version"),
    _R + "RecordModelUsage": _r("trainer", "model_id", "version", mutating=True),
    _R + "GetModelUsage": _r("viewer", "model_id", "version"),
    _R + "GetModelHistory": _r("viewer", "model_id"),
    _R + "CompressModel": _r("trainer", "model_id", "version", mutating=True),
    _R + "GetRegistryHealth": _r("viewer"),
    # Deploy: admins deploy and roll back.
    _D + "DeployModel": _r("admin", "model_version_id", mutating=True),
    _D + "ListDeployments": _r("viewer", "model_version_id"),
    _D + "GetDeployment": _r("viewer", "deployment_id"),
    _D + "RollbackDeployment": _r("admin", "deployment_id", mutating=True),
    _D + "CheckDeploymentHealth": _r("viewer", "deployment_id"),
    _D + "UndeployDeployment": _r("admin", "deployment_id", mutating=True),
    # Infrastructure: health checks are anonymous; reflection describes the API to any key.
    "/grpc.health.v1.Health/Check": _r(ANONYMOUS),
    "/grpc.health.v1.Health/Watch": _r(ANONYMOUS),
    "/grpc.health.v1.Health/List": _r(ANONYMOUS),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": _r("viewer"),
    # The gateway's body check (server.body_check_service) carries no key: it only reads the body
    # it is sent and answers with a header; the call it checks is authorised on its own here.
    "/envoy.service.auth.v3.Authorization/Check": _r(ANONYMOUS),
}


def resource_of(rule: Rule, request: object) -> str:
    parts = []
    for path in rule.resource:
        value = request
        for name in path.split("."):
            value = getattr(value, name, "")
        if value:
            parts.append(str(value)[:256])
    return "/".join(parts)
