# Every credential the tasks need lives in Secrets Manager and reaches the container
# through ECS `secrets` (resolved by the agent at task start), never as a plain
# environment variable, a Terraform variable or a value in the state file.
#
# Terraform creates the secrets empty. Put the values in before the service can start:
#   aws secretsmanager put-secret-value --secret-id <name>/BROKER_API_TOKEN --secret-string "$TOKEN"
# The token secrets hold comma-separated lists so that two tokens are valid during a
# rotation (docs/deployment.md: add new -> roll tasks -> move clients -> remove old).

locals {
  secrets = {
    BROKER_API_TOKEN   = "Track tokens for lab scripts: comma-separated, two during a rotation, each at least 32 characters."
    BROKER_ADMIN_TOKEN = "Admin tokens: comma-separated, two during a rotation, each at least 32 characters, none shared with the track tokens."
    METRICS_TOKEN      = "Bearer token for GET /metrics: ONE value (no list), since the metrics sidecar sends it verbatim; at least 32 characters."
    CSP_API_TOKEN      = "Token for the CSP API (BROKER_PROVIDER=csp)."
    CURSOR_SECRET      = "Key that signs admin pagination cursors; the same on every replica so a cursor from one task works on another."
  }
}

resource "aws_secretsmanager_secret" "broker" {
  #checkov:skip=CKV2_AWS_57:No rotation Lambda can do this: the tokens are also held outside AWS (lab scripts hold the track token, the CSP issues its token). Rotation is the documented two-value procedure in docs/deployment.md.
  for_each = local.secrets

  name                    = "${var.name}/${each.key}"
  description             = each.value
  kms_key_id              = aws_kms_key.broker.arn
  recovery_window_in_days = var.secret_recovery_window_days
}
