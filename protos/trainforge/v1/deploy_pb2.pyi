import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeploymentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOYMENT_STATE_UNSPECIFIED: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_PENDING: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_DEPLOYING: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_HEALTHY: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_UNHEALTHY: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_FAILED: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_ROLLED_BACK: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_SUPERSEDED: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_UNDEPLOYED: _ClassVar[DeploymentState]
DEPLOYMENT_STATE_UNSPECIFIED: DeploymentState
DEPLOYMENT_STATE_PENDING: DeploymentState
DEPLOYMENT_STATE_DEPLOYING: DeploymentState
DEPLOYMENT_STATE_HEALTHY: DeploymentState
DEPLOYMENT_STATE_UNHEALTHY: DeploymentState
DEPLOYMENT_STATE_FAILED: DeploymentState
DEPLOYMENT_STATE_ROLLED_BACK: DeploymentState
DEPLOYMENT_STATE_SUPERSEDED: DeploymentState
DEPLOYMENT_STATE_UNDEPLOYED: DeploymentState

class Deployment(_message.Message):
    __slots__ = ("deployment_id", "model_version_id", "target", "endpoint", "state", "auto_rollback", "health_check_enabled", "health_check_timeout", "deployment_tags", "previous_deployment_id", "error", "create_time", "update_time", "alias", "job_id", "model_name", "version", "engine", "serving_path", "last_health")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AUTO_ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_ENABLED_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_TAGS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    SERVING_PATH_FIELD_NUMBER: _ClassVar[int]
    LAST_HEALTH_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    model_version_id: str
    target: str
    endpoint: str
    state: DeploymentState
    auto_rollback: bool
    health_check_enabled: bool
    health_check_timeout: int
    deployment_tags: _containers.RepeatedScalarFieldContainer[str]
    previous_deployment_id: str
    error: _status_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    alias: str
    job_id: str
    model_name: str
    version: str
    engine: str
    serving_path: str
    last_health: DeploymentHealth
    def __init__(self, deployment_id: _Optional[str] = ..., model_version_id: _Optional[str] = ..., target: _Optional[str] = ..., endpoint: _Optional[str] = ..., state: _Optional[_Union[DeploymentState, str]] = ..., auto_rollback: _Optional[bool] = ..., health_check_enabled: _Optional[bool] = ..., health_check_timeout: _Optional[int] = ..., deployment_tags: _Optional[_Iterable[str]] = ..., previous_deployment_id: _Optional[str] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., alias: _Optional[str] = ..., job_id: _Optional[str] = ..., model_name: _Optional[str] = ..., version: _Optional[str] = ..., engine: _Optional[str] = ..., serving_path: _Optional[str] = ..., last_health: _Optional[_Union[DeploymentHealth, _Mapping]] = ...) -> None: ...

class DeploymentHealth(_message.Message):
    __slots__ = ("deployment_id", "healthy", "detail", "latency_ms", "check_time")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CHECK_TIME_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    healthy: bool
    detail: str
    latency_ms: float
    check_time: _timestamp_pb2.Timestamp
    def __init__(self, deployment_id: _Optional[str] = ..., healthy: _Optional[bool] = ..., detail: _Optional[str] = ..., latency_ms: _Optional[float] = ..., check_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeployModelRequest(_message.Message):
    __slots__ = ("model_version_id", "target", "auto_rollback", "health_check_timeout", "health_check_enabled", "deployment_tags", "alias", "engine")
    MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    AUTO_ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_ENABLED_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_TAGS_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    model_version_id: str
    target: str
    auto_rollback: bool
    health_check_timeout: int
    health_check_enabled: bool
    deployment_tags: _containers.RepeatedScalarFieldContainer[str]
    alias: str
    engine: str
    def __init__(self, model_version_id: _Optional[str] = ..., target: _Optional[str] = ..., auto_rollback: _Optional[bool] = ..., health_check_timeout: _Optional[int] = ..., health_check_enabled: _Optional[bool] = ..., deployment_tags: _Optional[_Iterable[str]] = ..., alias: _Optional[str] = ..., engine: _Optional[str] = ...) -> None: ...

class DeployModelResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: Deployment
    def __init__(self, data: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("model_version_id", "page_size", "page_token", "states", "targets")
    MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    model_version_id: str
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[DeploymentState]
    targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_version_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[DeploymentState, str]]] = ..., targets: _Optional[_Iterable[str]] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("data", "next_page_token")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[Deployment]
    next_page_token: str
    def __init__(self, data: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("model_version_id", "deployment_id")
    MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    model_version_id: str
    deployment_id: str
    def __init__(self, model_version_id: _Optional[str] = ..., deployment_id: _Optional[str] = ...) -> None: ...

class GetDeploymentResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: Deployment
    def __init__(self, data: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class RollbackDeploymentRequest(_message.Message):
    __slots__ = ("model_version_id", "deployment_id")
    MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    model_version_id: str
    deployment_id: str
    def __init__(self, model_version_id: _Optional[str] = ..., deployment_id: _Optional[str] = ...) -> None: ...

class RollbackDeploymentResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: Deployment
    def __init__(self, data: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class CheckDeploymentHealthRequest(_message.Message):
    __slots__ = ("model_version_id", "deployment_id")
    MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    model_version_id: str
    deployment_id: str
    def __init__(self, model_version_id: _Optional[str] = ..., deployment_id: _Optional[str] = ...) -> None: ...

class CheckDeploymentHealthResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: DeploymentHealth
    def __init__(self, data: _Optional[_Union[DeploymentHealth, _Mapping]] = ...) -> None: ...

class UndeployDeploymentRequest(_message.Message):
    __slots__ = ("model_version_id", "deployment_id")
    MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    model_version_id: str
    deployment_id: str
    def __init__(self, model_version_id: _Optional[str] = ..., deployment_id: _Optional[str] = ...) -> None: ...

class UndeployDeploymentResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: Deployment
    def __init__(self, data: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...
