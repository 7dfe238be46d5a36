"""The Terraform module as a reviewer would check it, without AWS.

infra/terraform is parsed with python-hcl2. Its DynamoDB table is compared with the
store's own `table_definition()`, so the two cannot drift; then the security-relevant
shape: tokens as ECS `secrets`, two or more tasks with a rolling-back circuit breaker, a
task role limited to this table, HTTPS with a redirect, WAF, alarms. The container
artifacts are checked in test_container_artifacts.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

from app.store.dynamodb_schema import TTL_ATTRIBUTE, table_definition

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "infra" / "terraform"
TOKENS = ("BROKER_API_TOKEN", "BROKER_ADMIN_TOKEN", "METRICS_TOKEN", "CSP_API_TOKEN")
SECRET_NAMES = (*TOKENS, "CURSOR_SECRET")
SKIP_DIRS = {".git", ".venv", ".tools", "node_modules", ".mypy_cache", ".ruff_cache"}


# --- HCL loading ----------------------------------------------------------------------


def _unquote(text: str) -> str:
    """python-hcl2 >= 5 keeps string literals quoted ('"PK"'); older releases do not."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _clean(node: Any) -> Any:
    """Plain data: literals unquoted, hcl2's bookkeeping keys (__is_block__, ...) dropped."""
    if isinstance(node, dict):
        return {_unquote(k): _clean(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if isinstance(node, str):
        return _unquote(node)
    return node


class Module:
    """Every .tf file of a directory, merged: resources and data by (type, name)."""

    def __init__(self, directory: Path) -> None:
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.data: dict[tuple[str, str], dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.text = ""
        for path in sorted(directory.glob("*.tf")):
            self.text += path.read_text(encoding="utf-8") + "\n"
            with path.open(encoding="utf-8") as handle:
                self._merge(_clean(hcl2.load(handle)))

    def _merge(self, parsed: dict[str, Any]) -> None:
        for kind, into in (("resource", self.resources), ("data", self.data)):
            for entry in parsed.get(kind, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        into[(rtype, name)] = body
        for entry in parsed.get("locals", []):
            self.locals.update(entry)
        for kind, into_named in (("variable", self.variables), ("output", self.outputs)):
            for entry in parsed.get(kind, []):
                into_named.update(entry)

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {name: body for (kind, name), body in self.resources.items() if kind == rtype}

    def one(self, rtype: str) -> tuple[str, dict[str, Any]]:
        found = self.of_type(rtype)
        assert len(found) == 1, f"expected exactly one {rtype}, found {sorted(found)}"
        return next(iter(found.items()))

    def local(self, expression: Any) -> Any:
        """Resolve a bare `${local.name}` reference; anything else is returned as is."""
        match = re.fullmatch(r"\$\{local\.(\w+)\}", expression) if isinstance(
            expression, str) else None
        return self.locals[match.group(1)] if match else expression


@cache
def module() -> Module:
    return Module(TF_DIR)


def _block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The single nested block `name` (hcl2 gives blocks as lists)."""
    blocks = body.get(name)
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected one {name} block"
    block = blocks[0]
    assert isinstance(block, dict)
    return block


def _blocks(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    blocks = body.get(name, [])
    return blocks if isinstance(blocks, list) else [blocks]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- DynamoDB: the table is the store's table ----------------------------------------

_COMPARED = {"TableName", "BillingMode", "KeySchema", "AttributeDefinitions",
             "GlobalSecondaryIndexes", "LocalSecondaryIndexes", "TimeToLiveSpecification"}


def _key_names(key_schema: list[dict[str, str]]) -> tuple[str | None, str | None]:
    by_type = {key["KeyType"]: key["AttributeName"] for key in key_schema}
    return by_type.get("HASH"), by_type.get("RANGE")


def _index_shape_from_store(index: dict[str, Any]) -> tuple[Any, ...]:
    projection = index.get("Projection", {"ProjectionType": "ALL"})
    return (*_key_names(index["KeySchema"]), projection["ProjectionType"],
            tuple(sorted(projection.get("NonKeyAttributes", ()))))


def _index_shape_from_hcl(index: dict[str, Any]) -> tuple[Any, ...]:
    return (index.get("hash_key"), index.get("range_key"), index.get("projection_type"),
            tuple(sorted(index.get("non_key_attributes", ()))))


def test_the_table_is_the_one_the_store_creates() -> None:
    store = table_definition("sandbox-broker")
    unknown = set(store) - _COMPARED
    assert not unknown, f"table_definition() gained {unknown}: teach this test to compare it"
    _, table = module().one("aws_dynamodb_table")

    assert (table["hash_key"], table.get("range_key")) == _key_names(store["KeySchema"])
    assert {(a["name"], a["type"]) for a in table["attribute"]} == {
        (a["AttributeName"], a["AttributeType"]) for a in store["AttributeDefinitions"]}

    assert {i["name"]: _index_shape_from_hcl(i)
            for i in _blocks(table, "global_secondary_index")} == {
        i["IndexName"]: _index_shape_from_store(i)
        for i in store.get("GlobalSecondaryIndexes", [])}
    assert {i["name"]: _index_shape_from_hcl(i)
            for i in _blocks(table, "local_secondary_index")} == {
        i["IndexName"]: _index_shape_from_store(i)
        for i in store.get("LocalSecondaryIndexes", [])}

    ttl = _block(table, "ttl")
    expected_ttl = store.get("TimeToLiveSpecification", {}).get("AttributeName", TTL_ATTRIBUTE)
    assert ttl["attribute_name"] == expected_ttl
    assert ttl["enabled"] is True

    assert table["billing_mode"] == store.get("BillingMode", "PAY_PER_REQUEST")
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    assert _block(table, "point_in_time_recovery")["enabled"] is True
    assert _block(table, "server_side_encryption")["enabled"] is True


# --- ECS: secrets, replicas, rollback ---------------------------------------------------


def _containers() -> list[dict[str, Any]]:
    tf = module()
    _, task = tf.one("aws_ecs_task_definition")
    names = re.findall(r"local\.(\w+)", task["container_definitions"])
    assert names, "container_definitions should be jsonencode([local.<container>, ...])"
    return [tf.locals[name] for name in names]


def _env_names(container: dict[str, Any]) -> tuple[set[str], str]:
    """Names set by `environment` (literal list or local lists it concatenates), plus
    the raw expression text for anything computed."""
    tf = module()
    environment = tf.local(container.get("environment", []))
    if isinstance(environment, list):
        return {e["name"] for e in environment}, ""
    names = set()
    for ref in re.findall(r"local\.(\w+)", environment):
        names |= {e["name"] for e in tf.locals[ref]}
    return names, environment


def test_tokens_reach_the_task_as_ecs_secrets_only() -> None:
    tf = module()
    containers = _containers()
    broker = next(c for c in containers if "sandbox-broker" in " ".join(c.get("command", [])))
    secrets = {s["name"]: s["valueFrom"] for s in tf.local(broker["secrets"])}
    assert set(SECRET_NAMES) <= set(secrets)
    for name in SECRET_NAMES:
        assert "aws_secretsmanager_secret." in secrets[name], name
    for container in containers:
        env_names, computed = _env_names(container)
        assert not env_names & set(SECRET_NAMES), container["name"]
        if computed:  # only the documented, validated pass-through may be computed
            assert "var.extra_environment" in computed
    validation = str(tf.variables["extra_environment"]["validation"])
    assert all(name in validation for name in SECRET_NAMES)
    # Values are put with the AWS CLI, never through Terraform (they would sit in state).
    assert not tf.of_type("aws_secretsmanager_secret_version")
    assert not any(name in tf.variables for name in (n.lower() for n in SECRET_NAMES))


def test_service_keeps_two_tasks_and_rolls_back_bad_deploys() -> None:
    tf = module()
    _, service = tf.one("aws_ecs_service")
    assert service["launch_type"] == "FARGATE"
    assert service["desired_count"] == "${var.desired_count}"
    assert tf.variables["desired_count"]["default"] >= 2
    assert tf.variables["min_capacity"]["default"] >= 2
    breaker = _block(service, "deployment_circuit_breaker")
    assert breaker["enable"] is True and breaker["rollback"] is True
    network = _block(service, "network_configuration")
    assert network["subnets"] == "${var.private_subnet_ids}"
    assert network["assign_public_ip"] is False
    assert "availability_zone" in tf.text and "local.private_subnet_azs" in str(service)

    _, target = tf.one("aws_appautoscaling_target")
    assert target["min_capacity"] == "${var.min_capacity}"
    policies = tf.of_type("aws_appautoscaling_policy").values()
    assert policies and all(p["policy_type"] == "TargetTrackingScaling" for p in policies)


# --- IAM: this table and its indexes, nothing else -------------------------------------


def _statements() -> Iterator[tuple[str, dict[str, Any]]]:
    for (kind, name), body in module().data.items():
        if kind == "aws_iam_policy_document":
            for statement in _blocks(body, "statement"):
                yield name, statement


def test_dynamodb_access_is_limited_to_the_table_and_its_indexes() -> None:
    table_name, _ = module().one("aws_dynamodb_table")
    table_arn = f"${{aws_dynamodb_table.{table_name}.arn}}"
    allowed = {table_arn, f"{table_arn}/index/*"}
    seen = set()
    for document, statement in _statements():
        actions = _as_list(statement.get("actions", []))
        if not any(a.lower().startswith("dynamodb:") for a in actions):
            continue
        assert document == "task", f"dynamodb actions in policy document {document}"
        assert "dynamodb:*" not in actions
        assert not {"dynamodb:CreateTable", "dynamodb:DeleteTable",
                    "dynamodb:UpdateTable"} & set(actions)
        resources = set(_as_list(statement["resources"]))
        assert resources <= allowed, resources - allowed
        seen |= resources
    assert seen == allowed
    role_policies = module().of_type("aws_iam_role_policy")
    assert any(p["policy"] == "${data.aws_iam_policy_document.task.json}"
               and p["role"] == "${aws_iam_role.task.id}" for p in role_policies.values())


# --- Edge: ALB and WAF --------------------------------------------------------------------


def test_alb_serves_https_and_redirects_http() -> None:
    listeners = module().of_type("aws_lb_listener").values()
    https = [x for x in listeners if x["protocol"] == "HTTPS"]
    assert len(https) == 1 and https[0]["port"] == 443
    assert https[0]["certificate_arn"] == "${var.certificate_arn}"
    assert "TLS13" in module().variables["ssl_policy"]["default"]
    http = [x for x in listeners if x["protocol"] == "HTTP"]
    assert len(http) == 1 and http[0]["port"] == 80
    action = _block(http[0], "default_action")
    assert action["type"] == "redirect"
    redirect = _block(action, "redirect")
    assert (redirect["protocol"], str(redirect["port"]), redirect["status_code"]) == (
        "HTTPS", "443", "HTTP_301")


def test_waf_has_managed_rules_and_a_per_ip_rate_rule() -> None:
    tf = module()
    acl_name, acl = tf.one("aws_wafv2_web_acl")
    rules = _blocks(acl, "rule")
    rate = [_block(_block(r, "statement"), "rate_based_statement")
            for r in rules if "rate_based_statement" in _block(r, "statement")]
    assert len(rate) == 1 and rate[0]["aggregate_key_type"] == "IP"
    managed = {_block(_block(r, "statement"), "managed_rule_group_statement")["name"]
               for r in rules if "managed_rule_group_statement" in _block(r, "statement")}
    assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} <= managed
    _, association = tf.one("aws_wafv2_web_acl_association")
    assert association["web_acl_arn"] == f"${{aws_wafv2_web_acl.{acl_name}.arn}}"
    assert association["resource_arn"].startswith("${aws_lb.")


# --- CloudWatch -------------------------------------------------------------------------


def test_alarms_cover_errors_latency_and_the_pool() -> None:
    tf = module()
    alarms = tf.of_type("aws_cloudwatch_metric_alarm").values()
    text = [str(a) for a in alarms]
    assert any("HTTPCode_Target_5XX_Count" in t and "RequestCount" in t for t in text)
    assert any(a.get("extended_statistic") == "p99" and a["metric_name"] == "TargetResponseTime"
               for a in alarms)
    by_status = {a["dimensions"].get("status"): a for a in alarms
                 if isinstance(a.get("dimensions"), dict) and "status" in a["dimensions"]}
    assert by_status["available"]["comparison_operator"] == "LessThanThreshold"
    assert by_status["available"]["threshold"] == "${var.pool_available_threshold}"
    assert by_status["deletion_failed"]["comparison_operator"] == "GreaterThanThreshold"
    assert by_status["deletion_failed"]["threshold"] == 0
    # The pool metrics come from the sidecar that scrapes /metrics into EMF.
    assert any(c.get("image") == "${var.adot_image}" for c in _containers())
    assert "awsemf" in tf.locals["adot_config"]["exporters"]
    for group in tf.of_type("aws_cloudwatch_log_group").values():
        assert group.get("retention_in_days"), group["name"]


def test_variables_and_outputs_are_documented() -> None:
    tf = module()
    assert tf.variables and tf.outputs
    for kind, named in (("variable", tf.variables), ("output", tf.outputs)):
        for name, body in named.items():
            assert len(body.get("description", "")) > 10, f"{kind} {name} needs a description"
    for required in ("certificate_arn", "container_image", "vpc_id", "private_subnet_ids"):
        assert "default" not in tf.variables[required], required


def _repository_files() -> list[str]:
    """Files that are or could be committed: git's view (tracked, plus untracked that
    .gitignore does not exclude); a plain walk where git is unavailable."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"], capture_output=True, check=True, timeout=60,
        ).stdout.decode()
        return [name for name in listed.split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        files = []
        for directory, subdirs, names in os.walk(ROOT):
            subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS | {".terraform"}]
            here = Path(directory).relative_to(ROOT)
            files += [str(here / name) for name in names]
        return files


def test_no_state_or_plan_files_in_the_repository() -> None:
    found = [name for name in _repository_files()
             if ".tfstate" in Path(name).name or name.endswith((".tfplan", "/tfplan"))
             or "/.terraform/" in f"/{name}"]
    assert not found
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert {"*.tfstate", "*.tfstate.*", "*.tfplan", ".terraform/"} <= set(ignored)


def test_terraform_style_is_canonical_indentation() -> None:
    """What `terraform fmt` would insist on, for machines without the binary
    (scripts/check-terraform.sh runs the real `fmt -check` where it exists)."""
    for path in TF_DIR.glob("*.tf"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.name}:{number}"
            assert "\t" not in line and line == line.rstrip(), where
            indent = len(line) - len(line.lstrip(" "))
            assert indent % 2 == 0, where
