# One customer-managed key for the broker's data at rest: the DynamoDB table, the
# Secrets Manager secrets and the CloudWatch log groups. Rotated yearly by KMS.

resource "aws_kms_key" "broker" {
  description             = "${var.name}: DynamoDB table, secrets and log groups"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "broker" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.broker.key_id
}

data "aws_iam_policy_document" "kms" {
  # This document is a key policy: its Resource "*" means this key and nothing else, and
  # the account-root statement is AWS's default that lets IAM policies (iam.tf, scoped
  # with kms:ViaService) grant use of the key.
  #checkov:skip=CKV_AWS_109:Key policy: Resource "*" is this key alone; the root statement delegates to IAM policies.
  #checkov:skip=CKV_AWS_111:Key policy: Resource "*" is this key alone; the root statement delegates to IAM policies.
  #checkov:skip=CKV_AWS_356:Key policy: Resource "*" is this key alone; the root statement delegates to IAM policies.
  statement {
    sid       = "AccountAdministration"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid = "CloudWatchLogsEncryption"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
    }
  }
}
