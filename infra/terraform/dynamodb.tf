# The broker's single table. Keys, attribute definitions, GSIs, projections and the TTL
# attribute mirror app/store/dynamodb_schema.py (what `sandbox-broker init-store`
# creates); tests/integration/test_deploy_artifacts.py fails when the two drift.
#
#   item          PK               SK
#   sandbox       SBX#<id>         META    (+ avail_pk/avail_sk while available,
#                                           + status_pk for the by_status index)
#   owner lease   OWNER#<owner>    LEASE
#   job lease     LEASE#<job>      JOB     (+ purge_at: TTL housekeeping only)
#   event         EVT#<sandbox>    <event id> (+ feed_pk for the feed, purge_at = retention)
#   checkpoint    CKPT#<name>      CKPT
#   tombstone     TOMB#<id>        TOMB    (+ purge_at: a deleted sandbox sync must not re-add)

resource "aws_dynamodb_table" "broker" {
  name                        = var.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "PK"
  range_key                   = "SK"
  deletion_protection_enabled = var.table_deletion_protection

  attribute {
    name = "PK"
    type = "S"
  }

  attribute {
    name = "SK"
    type = "S"
  }

  attribute {
    name = "avail_pk"
    type = "S"
  }

  attribute {
    name = "avail_sk"
    type = "S"
  }

  attribute {
    name = "status_pk"
    type = "S"
  }

  attribute {
    name = "sandbox_id"
    type = "S"
  }

  attribute {
    name = "feed_pk"
    type = "S"
  }

  attribute {
    name = "event_id"
    type = "S"
  }

  # Sparse and sharded: present only while a sandbox is available, so a name prefix
  # is a server-side begins_with and no single partition takes every allocation.
  global_secondary_index {
    name            = "availability"
    hash_key        = "avail_pk"
    range_key       = "avail_sk"
    projection_type = "ALL"
  }

  # Admin listing, counts and the background jobs page through this one.
  global_secondary_index {
    name            = "by_status"
    hash_key        = "status_pk"
    range_key       = "sandbox_id"
    projection_type = "ALL"
  }

  # The event feed, sharded like the others and ordered by time-sortable event ids.
  global_secondary_index {
    name            = "events_feed"
    hash_key        = "feed_pk"
    range_key       = "event_id"
    projection_type = "ALL"
  }

  # Job-lease and event items carry purge_at (event retention). Lease expiry itself is
  # decided by the application from its own expires_at; TTL deletion is late.
  ttl {
    attribute_name = "purge_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.broker.arn
  }
}
