# Two roles, least privilege:
# - the execution role is used by the ECS agent: pull the image, write container logs,
#   read exactly the broker's secrets;
# - the task role is used by the application: this table and its indexes, nothing else
#   in DynamoDB (no CreateTable/UpdateTable: Terraform owns the schema), plus the
#   metrics sidecar's writes to its own log group.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

# --- execution role ----------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution_managed" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "ReadBrokerSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [for secret in aws_secretsmanager_secret.broker : secret.arn]
  }

  statement {
    sid       = "DecryptBrokerSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.broker.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "read-broker-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- task role ---------------------------------------------------------------------

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "task" {
  # Items: the claim transaction, conditional state changes, job leases, admin reads.
  # (TransactWriteItems is authorised per item as Put/Update/Delete/ConditionCheck.)
  statement {
    sid = "BrokerTableItems"
    actions = [
      "dynamodb:BatchGetItem",
      "dynamodb:BatchWriteItem",
      "dynamodb:ConditionCheckItem",
      "dynamodb:DeleteItem",
      "dynamodb:DescribeTable",
      "dynamodb:DescribeTimeToLive",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "dynamodb:Scan",
      "dynamodb:UpdateItem",
    ]
    resources = [aws_dynamodb_table.broker.arn]
  }

  # Indexes are read-only.
  statement {
    sid       = "BrokerTableIndexes"
    actions   = ["dynamodb:Query", "dynamodb:Scan"]
    resources = ["${aws_dynamodb_table.broker.arn}/index/*"]
  }

  # The table is encrypted with the broker's key; DynamoDB uses it on the task's behalf.
  statement {
    sid       = "BrokerTableKey"
    actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]
    resources = [aws_kms_key.broker.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["dynamodb.${local.region}.amazonaws.com"]
    }
  }

  # The metrics sidecar writes embedded-metric-format logs to its own log group.
  statement {
    sid       = "MetricsSidecarLogs"
    actions   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    resources = [aws_cloudwatch_log_group.metrics.arn, "${aws_cloudwatch_log_group.metrics.arn}:*"]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "broker-table-access"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}
