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

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_PAUSED: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_CANCELLING: _ClassVar[JobState]

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_TRAINING: _ClassVar[JobKind]
    JOB_KIND_EVALUATION: _ClassVar[JobKind]
    JOB_KIND_COMPRESSION: _ClassVar[JobKind]
    JOB_KIND_DEPLOYMENT: _ClassVar[JobKind]

class JobEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_EVENT_TYPE_UNSPECIFIED: _ClassVar[JobEventType]
    JOB_EVENT_TYPE_STATE_CHANGED: _ClassVar[JobEventType]
    JOB_EVENT_TYPE_PROGRESS: _ClassVar[JobEventType]
    JOB_EVENT_TYPE_EVALUATION: _ClassVar[JobEventType]
    JOB_EVENT_TYPE_CHECKPOINT: _ClassVar[JobEventType]
    JOB_EVENT_TYPE_LOG: _ClassVar[JobEventType]
    JOB_EVENT_TYPE_ERROR: _ClassVar[JobEventType]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_PAUSED: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_CANCELLING: JobState
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_TRAINING: JobKind
JOB_KIND_EVALUATION: JobKind
JOB_KIND_COMPRESSION: JobKind
JOB_KIND_DEPLOYMENT: JobKind
JOB_EVENT_TYPE_UNSPECIFIED: JobEventType
JOB_EVENT_TYPE_STATE_CHANGED: JobEventType
JOB_EVENT_TYPE_PROGRESS: JobEventType
JOB_EVENT_TYPE_EVALUATION: JobEventType
JOB_EVENT_TYPE_CHECKPOINT: JobEventType
JOB_EVENT_TYPE_LOG: JobEventType
JOB_EVENT_TYPE_ERROR: JobEventType

class JobSpec(_message.Message):
    __slots__ = ("name", "model", "model_type", "training_data", "hyperparameters", "optimization", "evaluation", "deployment", "distributed", "method", "lora", "tags", "checkpointing")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DATA_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZATION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    model_type: str
    training_data: TrainingData
    hyperparameters: Hyperparameters
    optimization: Optimization
    evaluation: Evaluation
    deployment: DeploymentPolicy
    distributed: Distributed
    method: str
    lora: LoraConfig
    tags: _containers.RepeatedScalarFieldContainer[str]
    checkpointing: Checkpointing
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., model_type: _Optional[str] = ..., training_data: _Optional[_Union[TrainingData, _Mapping]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., optimization: _Optional[_Union[Optimization, _Mapping]] = ..., evaluation: _Optional[_Union[Evaluation, _Mapping]] = ..., deployment: _Optional[_Union[DeploymentPolicy, _Mapping]] = ..., distributed: _Optional[_Union[Distributed, _Mapping]] = ..., method: _Optional[str] = ..., lora: _Optional[_Union[LoraConfig, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., checkpointing: _Optional[_Union[Checkpointing, _Mapping]] = ...) -> None: ...

class Checkpointing(_message.Message):
    __slots__ = ("keep_last", "keep_best")
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    KEEP_BEST_FIELD_NUMBER: _ClassVar[int]
    keep_last: int
    keep_best: bool
    def __init__(self, keep_last: _Optional[int] = ..., keep_best: _Optional[bool] = ...) -> None: ...

class TrainingData(_message.Message):
    __slots__ = ("source", "path", "format", "validation_split")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SPLIT_FIELD_NUMBER: _ClassVar[int]
    source: str
    path: str
    format: str
    validation_split: float
    def __init__(self, source: _Optional[str] = ..., path: _Optional[str] = ..., format: _Optional[str] = ..., validation_split: _Optional[float] = ...) -> None: ...

class Hyperparameters(_message.Message):
    __slots__ = ("learning_rate", "batch_size", "epochs", "warmup_steps", "weight_decay", "gradient_accumulation", "max_seq_length", "seed", "max_steps", "save_steps", "eval_steps")
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    SAVE_STEPS_FIELD_NUMBER: _ClassVar[int]
    EVAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    learning_rate: float
    batch_size: int
    epochs: int
    warmup_steps: int
    weight_decay: float
    gradient_accumulation: int
    max_seq_length: int
    seed: int
    max_steps: int
    save_steps: int
    eval_steps: int
    def __init__(self, learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., epochs: _Optional[int] = ..., warmup_steps: _Optional[int] = ..., weight_decay: _Optional[float] = ..., gradient_accumulation: _Optional[int] = ..., max_seq_length: _Optional[int] = ..., seed: _Optional[int] = ..., max_steps: _Optional[int] = ..., save_steps: _Optional[int] = ..., eval_steps: _Optional[int] = ...) -> None: ...

class Optimization(_message.Message):
    __slots__ = ("optimizer", "scheduler", "early_stopping", "torch_compile")
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_FIELD_NUMBER: _ClassVar[int]
    TORCH_COMPILE_FIELD_NUMBER: _ClassVar[int]
    optimizer: str
    scheduler: str
    early_stopping: EarlyStopping
    torch_compile: str
    def __init__(self, optimizer: _Optional[str] = ..., scheduler: _Optional[str] = ..., early_stopping: _Optional[_Union[EarlyStopping, _Mapping]] = ..., torch_compile: _Optional[str] = ...) -> None: ...

class EarlyStopping(_message.Message):
    __slots__ = ("enabled", "patience", "metric")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    patience: int
    metric: str
    def __init__(self, enabled: _Optional[bool] = ..., patience: _Optional[int] = ..., metric: _Optional[str] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("metrics", "save_best_model")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SAVE_BEST_MODEL_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    save_best_model: bool
    def __init__(self, metrics: _Optional[_Iterable[str]] = ..., save_best_model: _Optional[bool] = ...) -> None: ...

class DeploymentPolicy(_message.Message):
    __slots__ = ("auto_deploy", "deployment_target", "health_check_enabled")
    AUTO_DEPLOY_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_TARGET_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_ENABLED_FIELD_NUMBER: _ClassVar[int]
    auto_deploy: bool
    deployment_target: str
    health_check_enabled: bool
    def __init__(self, auto_deploy: _Optional[bool] = ..., deployment_target: _Optional[str] = ..., health_check_enabled: _Optional[bool] = ...) -> None: ...

class Distributed(_message.Message):
    __slots__ = ("enabled", "strategy", "devices", "world_size", "zero_stage", "hostfile")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    ZERO_STAGE_FIELD_NUMBER: _ClassVar[int]
    HOSTFILE_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    strategy: str
    devices: _containers.RepeatedScalarFieldContainer[int]
    world_size: int
    zero_stage: int
    hostfile: str
    def __init__(self, enabled: _Optional[bool] = ..., strategy: _Optional[str] = ..., devices: _Optional[_Iterable[int]] = ..., world_size: _Optional[int] = ..., zero_stage: _Optional[int] = ..., hostfile: _Optional[str] = ...) -> None: ...

class LoraConfig(_message.Message):
    __slots__ = ("r", "alpha", "dropout", "target_modules")
    R_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    r: int
    alpha: int
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, r: _Optional[int] = ..., alpha: _Optional[int] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("current_epoch", "total_epochs", "current_step", "total_steps", "percent", "estimated_remaining")
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_REMAINING_FIELD_NUMBER: _ClassVar[int]
    current_epoch: int
    total_epochs: int
    current_step: int
    total_steps: int
    percent: float
    estimated_remaining: float
    def __init__(self, current_epoch: _Optional[int] = ..., total_epochs: _Optional[int] = ..., current_step: _Optional[int] = ..., total_steps: _Optional[int] = ..., percent: _Optional[float] = ..., estimated_remaining: _Optional[float] = ...) -> None: ...

class JobMetrics(_message.Message):
    __slots__ = ("train_loss", "eval_loss", "learning_rate", "tokens_per_sec", "grad_norm", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    train_loss: float
    eval_loss: float
    learning_rate: float
    tokens_per_sec: float
    grad_norm: float
    extra: _containers.ScalarMap[str, float]
    def __init__(self, train_loss: _Optional[float] = ..., eval_loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., tokens_per_sec: _Optional[float] = ..., grad_norm: _Optional[float] = ..., extra: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ResourceUsage(_message.Message):
    __slots__ = ("cpu_percent", "rss_mb", "gpu_utilization", "gpu_memory_mb")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RSS_MB_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    rss_mb: float
    gpu_utilization: float
    gpu_memory_mb: float
    def __init__(self, cpu_percent: _Optional[float] = ..., rss_mb: _Optional[float] = ..., gpu_utilization: _Optional[float] = ..., gpu_memory_mb: _Optional[float] = ...) -> None: ...

class EvaluationSpec(_message.Message):
    __slots__ = ("model_name", "version", "data_path", "metrics", "max_samples", "max_new_tokens", "batch_size")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_PATH_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    data_path: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    max_samples: int
    max_new_tokens: int
    batch_size: int
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., data_path: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., max_samples: _Optional[int] = ..., max_new_tokens: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class CompressionSpec(_message.Message):
    __slots__ = ("model_name", "version", "source_model_version_id", "compression_type", "precision", "mode", "max_perplexity_increase", "force", "target_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_PERPLEXITY_INCREASE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    source_model_version_id: str
    compression_type: str
    precision: str
    mode: str
    max_perplexity_increase: float
    force: bool
    target_version: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., source_model_version_id: _Optional[str] = ..., compression_type: _Optional[str] = ..., precision: _Optional[str] = ..., mode: _Optional[str] = ..., max_perplexity_increase: _Optional[float] = ..., force: _Optional[bool] = ..., target_version: _Optional[str] = ...) -> None: ...

class CompressionResult(_message.Message):
    __slots__ = ("model_version_id", "model_name", "version", "metrics", "gate_passed", "format", "source_size_bytes", "size_bytes", "eval_data")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    GATE_PASSED_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EVAL_DATA_FIELD_NUMBER: _ClassVar[int]
    model_version_id: str
    model_name: str
    version: str
    metrics: _containers.ScalarMap[str, float]
    gate_passed: bool
    format: str
    source_size_bytes: int
    size_bytes: int
    eval_data: str
    def __init__(self, model_version_id: _Optional[str] = ..., model_name: _Optional[str] = ..., version: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., gate_passed: _Optional[bool] = ..., format: _Optional[str] = ..., source_size_bytes: _Optional[int] = ..., size_bytes: _Optional[int] = ..., eval_data: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "spec", "status", "progress", "metrics", "resources", "error", "result_model_version_id", "attempt", "create_time", "start_time", "end_time", "kind", "evaluation", "compression", "evaluation_result", "compression_result", "deployment", "deployment_result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_RESULT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_RESULT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    spec: JobSpec
    status: JobState
    progress: Progress
    metrics: JobMetrics
    resources: ResourceUsage
    error: _status_pb2.Status
    result_model_version_id: str
    attempt: int
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    kind: JobKind
    evaluation: EvaluationSpec
    compression: CompressionSpec
    evaluation_result: EvaluationResult
    compression_result: CompressionResult
    deployment: DeploymentJobSpec
    deployment_result: DeploymentJobResult
    def __init__(self, job_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., status: _Optional[_Union[JobState, str]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., metrics: _Optional[_Union[JobMetrics, _Mapping]] = ..., resources: _Optional[_Union[ResourceUsage, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., result_model_version_id: _Optional[str] = ..., attempt: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[JobKind, str]] = ..., evaluation: _Optional[_Union[EvaluationSpec, _Mapping]] = ..., compression: _Optional[_Union[CompressionSpec, _Mapping]] = ..., evaluation_result: _Optional[_Union[EvaluationResult, _Mapping]] = ..., compression_result: _Optional[_Union[CompressionResult, _Mapping]] = ..., deployment: _Optional[_Union[DeploymentJobSpec, _Mapping]] = ..., deployment_result: _Optional[_Union[DeploymentJobResult, _Mapping]] = ...) -> None: ...

class DeploymentJobSpec(_message.Message):
    __slots__ = ("deployment_id", "model_version_id", "model_name", "version", "target", "alias")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    model_version_id: str
    model_name: str
    version: str
    target: str
    alias: str
    def __init__(self, deployment_id: _Optional[str] = ..., model_version_id: _Optional[str] = ..., model_name: _Optional[str] = ..., version: _Optional[str] = ..., target: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class DeploymentJobResult(_message.Message):
    __slots__ = ("deployment_id", "endpoint", "deploy_seconds")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    endpoint: str
    deploy_seconds: float
    def __init__(self, deployment_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., deploy_seconds: _Optional[float] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "sequence", "type", "create_time", "status", "message", "progress", "metrics")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sequence: int
    type: JobEventType
    create_time: _timestamp_pb2.Timestamp
    status: JobState
    message: str
    progress: Progress
    metrics: JobMetrics
    def __init__(self, job_id: _Optional[str] = ..., sequence: _Optional[int] = ..., type: _Optional[_Union[JobEventType, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[JobState, str]] = ..., message: _Optional[str] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., metrics: _Optional[_Union[JobMetrics, _Mapping]] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("job_id", "step", "epoch", "path", "size_bytes", "metrics", "is_best", "create_time")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    IS_BEST_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    step: int
    epoch: int
    path: str
    size_bytes: int
    metrics: _containers.ScalarMap[str, float]
    is_best: bool
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., step: _Optional[int] = ..., epoch: _Optional[int] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., is_best: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GenerationConfig(_message.Message):
    __slots__ = ("num_samples", "temperature", "max_tokens", "quality_filter", "model", "seed")
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FILTER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    num_samples: int
    temperature: float
    max_tokens: int
    quality_filter: bool
    model: str
    seed: int
    def __init__(self, num_samples: _Optional[int] = ..., temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ..., quality_filter: _Optional[bool] = ..., model: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class TemplateValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class SyntheticDataset(_message.Message):
    __slots__ = ("path", "format", "num_samples", "num_filtered", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NUM_FILTERED_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    format: str
    num_samples: int
    num_filtered: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., format: _Optional[str] = ..., num_samples: _Optional[int] = ..., num_filtered: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class EvaluationResult(_message.Message):
    __slots__ = ("model_name", "version", "metrics", "num_samples", "duration_seconds")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    metrics: _containers.ScalarMap[str, float]
    num_samples: int
    duration_seconds: float
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., num_samples: _Optional[int] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class TrainingStatistics(_message.Message):
    __slots__ = ("total_jobs", "jobs_by_state", "success_rate", "average_training_seconds", "p50_training_seconds")
    class JobsByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TOTAL_JOBS_FIELD_NUMBER: _ClassVar[int]
    JOBS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_TRAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P50_TRAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    total_jobs: int
    jobs_by_state: _containers.ScalarMap[str, int]
    success_rate: float
    average_training_seconds: float
    p50_training_seconds: float
    def __init__(self, total_jobs: _Optional[int] = ..., jobs_by_state: _Optional[_Mapping[str, int]] = ..., success_rate: _Optional[float] = ..., average_training_seconds: _Optional[float] = ..., p50_training_seconds: _Optional[float] = ...) -> None: ...

class ComponentHealth(_message.Message):
    __slots__ = ("name", "status", "detail", "latency_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: str
    detail: str
    latency_ms: float
    def __init__(self, name: _Optional[str] = ..., status: _Optional[str] = ..., detail: _Optional[str] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class SystemHealth(_message.Message):
    __slots__ = ("status", "components", "version", "uptime_seconds", "workers")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    status: str
    components: _containers.RepeatedCompositeFieldContainer[ComponentHealth]
    version: str
    uptime_seconds: float
    workers: WorkersHealth
    def __init__(self, status: _Optional[str] = ..., components: _Optional[_Iterable[_Union[ComponentHealth, _Mapping]]] = ..., version: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., workers: _Optional[_Union[WorkersHealth, _Mapping]] = ...) -> None: ...

class WorkersHealth(_message.Message):
    __slots__ = ("live_workers", "queued_jobs", "oldest_queued_seconds", "processes")
    LIVE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_QUEUED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    live_workers: int
    queued_jobs: int
    oldest_queued_seconds: float
    processes: _containers.RepeatedCompositeFieldContainer[WorkerProcess]
    def __init__(self, live_workers: _Optional[int] = ..., queued_jobs: _Optional[int] = ..., oldest_queued_seconds: _Optional[float] = ..., processes: _Optional[_Iterable[_Union[WorkerProcess, _Mapping]]] = ...) -> None: ...

class WorkerProcess(_message.Message):
    __slots__ = ("worker_id", "host", "pid", "start_time", "last_seen_time", "concurrency", "running_jobs", "gpus")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_TIME_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    host: str
    pid: int
    start_time: _timestamp_pb2.Timestamp
    last_seen_time: _timestamp_pb2.Timestamp
    concurrency: int
    running_jobs: int
    gpus: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_id: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., concurrency: _Optional[int] = ..., running_jobs: _Optional[int] = ..., gpus: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("spec", "start")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    start: bool
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., start: _Optional[bool] = ...) -> None: ...

class CreateJobResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: Job
    def __init__(self, data: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "kinds", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    kinds: _containers.RepeatedScalarFieldContainer[JobKind]
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., kinds: _Optional[_Iterable[_Union[JobKind, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("data", "next_page_token", "total_size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    total_size: int
    def __init__(self, data: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: Job
    def __init__(self, data: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class StartJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class StartJobResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: Job
    def __init__(self, data: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: Job
    def __init__(self, data: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class PauseJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class PauseJobResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: Job
    def __init__(self, data: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ResumeJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ResumeJobResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: Job
    def __init__(self, data: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: JobEvent
    def __init__(self, data: _Optional[_Union[JobEvent, _Mapping]] = ...) -> None: ...

class ListJobEventsRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobEventsResponse(_message.Message):
    __slots__ = ("data", "next_page_token")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[JobEvent]
    next_page_token: str
    def __init__(self, data: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListJobCheckpointsRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobCheckpointsResponse(_message.Message):
    __slots__ = ("data", "next_page_token")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    next_page_token: str
    def __init__(self, data: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteJobFilesRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobFilesResponse(_message.Message):
    __slots__ = ("data", "bytes_freed")
    DATA_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    data: Job
    bytes_freed: int
    def __init__(self, data: _Optional[_Union[Job, _Mapping]] = ..., bytes_freed: _Optional[int] = ...) -> None: ...

class GenerateSyntheticDataRequest(_message.Message):
    __slots__ = ("template_prompts", "generation_config", "output_format", "variables", "output_path")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TemplateValues
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TemplateValues, _Mapping]] = ...) -> None: ...
    TEMPLATE_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_CONFIG_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    template_prompts: _containers.RepeatedScalarFieldContainer[str]
    generation_config: GenerationConfig
    output_format: str
    variables: _containers.MessageMap[str, TemplateValues]
    output_path: str
    def __init__(self, template_prompts: _Optional[_Iterable[str]] = ..., generation_config: _Optional[_Union[GenerationConfig, _Mapping]] = ..., output_format: _Optional[str] = ..., variables: _Optional[_Mapping[str, TemplateValues]] = ..., output_path: _Optional[str] = ...) -> None: ...

class GenerateSyntheticDataResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: SyntheticDataset
    def __init__(self, data: _Optional[_Union[SyntheticDataset, _Mapping]] = ...) -> None: ...

class EvaluateModelRequest(_message.Message):
    __slots__ = ("model_name", "version", "data_path", "metrics", "max_samples", "max_new_tokens", "batch_size")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_PATH_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    data_path: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    max_samples: int
    max_new_tokens: int
    batch_size: int
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., data_path: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., max_samples: _Optional[int] = ..., max_new_tokens: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class EvaluateModelResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: Job
    def __init__(self, data: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetTrainingStatisticsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTrainingStatisticsResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: TrainingStatistics
    def __init__(self, data: _Optional[_Union[TrainingStatistics, _Mapping]] = ...) -> None: ...

class GetSystemHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSystemHealthResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: SystemHealth
    def __init__(self, data: _Optional[_Union[SystemHealth, _Mapping]] = ...) -> None: ...
