"""REST bodies with keys the API does not define are refused, not silently trimmed.

Envoy's transcoder drops unknown JSON keys; the gateway's ext_authz filter asks the server
(server.body_check_service) which keys those are, and the server refuses the call with 400
INVALID_ARGUMENT naming each of them, after authentication, before anything is written."""

from __future__ import annotations

import uuid

import pytest

from tests.jobs.conftest import job_inputs, tiny_job  # noqa: F401 - job_inputs is a fixture
from tests.support import violations
from trainforge.server.body_fields import BodySchema, _walk
from trainforge.v1 import deploy_pb2, registry_pb2, training_pb2

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]


def _schema() -> BodySchema:
    return BodySchema([training_pb2.DESCRIPTOR.services_by_name["TrainingService"],
                       registry_pb2.DESCRIPTOR.services_by_name["RegistryService"],
                       deploy_pb2.DESCRIPTOR.services_by_name["DeployService"]])


def test_register_with_a_misspelt_field_is_refused_and_registers_nothing(rest):
    name = f"typo-{uuid.uuid4().hex[:8]}"
    reply = rest.post("/api/training/models", {"name": name, "version": "1.0.0", "model_typ": "fine_tuned",
                                               "architecture": {"model_family": "Llama", "layerz": 3}})
    assert reply.status == 400, reply
    assert reply.body["code"] == 3 and "model_typ" in reply.body["message"]
    found = violations(reply)
    assert set(found) == {"model_typ", "architecture.layerz"}, found
    assert "did you mean 'model_type'" in found["model_typ"]
    assert rest.get(f"/api/training/models/{name}").status == 404
    # The same body without the typos goes through.
    ok = rest.post("/api/training/models", {"name": name, "version": "1.0.0", "model_type": "fine_tuned",
                                            "architecture": {"model_family": "Llama"}})
    assert ok.status == 200, ok


@pytest.mark.usefixtures("job_inputs")
def test_a_job_body_names_every_unknown_key_at_any_depth_and_creates_nothing(rest):
    before = int(rest.get("/api/training/jobs?page_size=1").body["total_size"])
    body = tiny_job("typo-job", hyperparameters={"learning_rat": 0.1}, optimization={"early_stopping": {"patiense": 3}},
                    trainingData={"validaton_split": 0.2})
    body["evalution"] = {"metrics": ["accuracy"]}
    reply = rest.post("/api/training/jobs", body)
    assert reply.status == 400, reply
    found = violations(reply)
    assert set(found) == {"hyperparameters.learning_rat", "optimization.early_stopping.patiense",
                          "training_data.validaton_split", "evalution"}, found
    assert "did you mean 'learning_rate'" in found["hyperparameters.learning_rat"]
    assert int(rest.get("/api/training/jobs?page_size=1").body["total_size"]) == before
    # camelCase and snake_case spellings of real fields are both fields.
    camel = tiny_job("camel-job")
    camel["trainingData"]["validationSplit"] = camel["trainingData"].pop("validation_split")
    assert rest.post("/api/training/jobs", camel).status == 200


def test_authentication_comes_before_the_body_check(rest):
    anonymous = rest.with_token("")
    reply = anonymous.post("/api/training/models", {"name": "x", "version": "1", "bogus": 1})
    assert reply.status == 401, reply


def test_a_client_cannot_forge_the_gateways_header(rest):
    name = f"forged-{uuid.uuid4().hex[:8]}"
    reply = rest.post("/api/training/models", {"name": name, "version": "1.0.0"},
                      headers={"x-trainforge-unknown-fields": '[["name","forged"]]'})
    assert reply.status == 200, reply


def test_bodyless_calls_and_list_filters_are_untouched(rest):
    assert rest.get("/api/training/models?page_size=1").status == 200
    assert rest.get("/api/training/health").status == 200


def test_every_rest_rule_with_a_body_is_known_to_the_schema():
    schema = _schema()
    route = schema.message_for("POST", "/api/training/jobs?start=true")
    assert route is not None and route.body.name == "JobSpec"
    route = schema.message_for("PUT", "/api/training/models/m/aliases/production")
    assert route is not None and route.body.name == "SetModelAliasRequest" and "alias" in route.bound
    assert schema.message_for("GET", "/api/training/models") is None  # no body
    assert schema.unknown_fields("POST", "/api/training/models", b"{not json") == []  # the transcoder's 400
    # Bound path variables are not unknown in a body "*" request.
    assert schema.unknown_fields("PUT", "/api/training/models/m/aliases/p", b'{"alias": "p", "version": "1"}') == []
    # Free-form Struct fields (lineage.config) hold any keys; map keys are data, not fields.
    body = b'{"name": "m", "version": "1", "lineage": {"config": {"anything": {"goes": 1}}}, ' \
           b'"performance_metrics": {"my_metric": 0.5}}'
    assert schema.unknown_fields("POST", "/api/training/models", body) == []


def test_repeated_messages_are_walked_element_by_element():
    found = []
    _walk(registry_pb2.ListModelsResponse.DESCRIPTOR, {"data": [{"name": "a"}, {"nam": "b", "tags": ["x"]}]}, "",
          found)
    assert [(p.field, "did you mean 'name'" in p.description) for p in found] == [("data[1].nam", True)]
