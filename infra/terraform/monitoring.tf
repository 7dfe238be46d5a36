# Logs, metrics and alarms.
#
# Request health (5xx rate, p99 latency, healthy targets) comes from the ALB's own
# CloudWatch metrics. Pool health comes from the service: it exports the pool size by
# status as a Prometheus gauge at /metrics (zero-filled for every status). A sidecar in
# each task, the AWS Distro for OpenTelemetry collector, scrapes 127.0.0.1:8080/metrics
# once a minute with the METRICS_TOKEN bearer token and writes the pool gauge to
# CloudWatch as embedded-metric-format (EMF) log events; CloudWatch turns those into
# metrics in var.metrics_namespace with a single `status` dimension. Every replica
# reports the same store-wide counts, so the alarms use Maximum across replicas.

resource "aws_cloudwatch_log_group" "app" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.broker.arn
}

# EMF events are only the transport: CloudWatch extracts the metrics on arrival and
# keeps those for 15 months, so the raw events need not live long.
resource "aws_cloudwatch_log_group" "metrics" {
  #checkov:skip=CKV_AWS_338:Raw EMF transport events; the metrics extracted from them are retained by CloudWatch Metrics for 15 months.
  name              = "/ecs/${var.name}/metrics"
  retention_in_days = 14
  kms_key_id        = aws_kms_key.broker.arn
}

locals {
  # Collector configuration, passed to the sidecar as AOT_CONFIG_CONTENT.
  # "$${env:METRICS_TOKEN}" is the collector's own env expansion, escaped for HCL.
  adot_config = {
    receivers = {
      prometheus = {
        config = {
          global = { scrape_interval = "60s", scrape_timeout = "10s" }
          scrape_configs = [{
            job_name       = var.name
            metrics_path   = "/metrics"
            static_configs = [{ targets = ["127.0.0.1:${local.container_port}"] }]
            authorization  = { type = "Bearer", credentials = "$${env:METRICS_TOKEN}" }
            # Only the pool gauge goes to CloudWatch; the ALB already covers requests.
            metric_relabel_configs = [{
              source_labels = ["__name__"]
              regex         = var.pool_metric_name
              action        = "keep"
            }]
          }]
        }
      }
    }
    processors = {
      batch = { timeout = "60s" }
    }
    exporters = {
      awsemf = {
        namespace                        = var.metrics_namespace
        log_group_name                   = aws_cloudwatch_log_group.metrics.name
        log_stream_name                  = "{TaskId}"
        region                           = local.region
        dimension_rollup_option          = "NoDimensionRollup"
        resource_to_telemetry_conversion = { enabled = false }
        metric_declarations = [{
          dimensions            = [["status"]]
          metric_name_selectors = ["^${var.pool_metric_name}$"]
        }]
      }
    }
    service = {
      pipelines = {
        metrics = { receivers = ["prometheus"], processors = ["batch"], exporters = ["awsemf"] }
      }
    }
  }

  alb_dimensions = {
    LoadBalancer = aws_lb.broker.arn_suffix
  }
  target_dimensions = {
    LoadBalancer = aws_lb.broker.arn_suffix
    TargetGroup  = aws_lb_target_group.broker.arn_suffix
  }
}

# 5xx responses (from the tasks and from the ALB itself) as a share of all requests.
# The service answers 503 with Retry-After on contention and store outages, so a short
# burst is expected; the alarm wants the rate high in 2 of 3 minutes.
resource "aws_cloudwatch_metric_alarm" "http_5xx_rate" {
  alarm_name          = "${var.name}-5xx-rate"
  alarm_description   = "More than ${var.error_rate_threshold_percent}% of requests answered 5xx (target + ALB)."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.error_rate_threshold_percent
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  metric_query {
    id          = "error_rate"
    label       = "5xx rate (%)"
    expression  = "IF(requests >= ${var.error_rate_min_requests}, 100 * (FILL(target_5xx, 0) + FILL(elb_5xx, 0)) / requests, 0)"
    return_data = true
  }

  metric_query {
    id = "requests"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      dimensions  = local.alb_dimensions
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id = "target_5xx"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = local.alb_dimensions
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id = "elb_5xx"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      dimensions  = local.alb_dimensions
      period      = 60
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "latency_p99" {
  alarm_name          = "${var.name}-p99-latency"
  alarm_description   = "p99 target response time above ${var.p99_latency_threshold_seconds}s."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  dimensions          = local.target_dimensions
  extended_statistic  = "p99"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.p99_latency_threshold_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "healthy_targets" {
  alarm_name          = "${var.name}-healthy-targets"
  alarm_description   = "Fewer than ${var.min_capacity} tasks pass the ALB readiness check (/readyz)."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HealthyHostCount"
  dimensions          = local.target_dimensions
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "LessThanThreshold"
  threshold           = var.min_capacity
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

# Missing data breaches: no datapoints means the scrape pipeline is broken, and then
# nobody would see the pool run dry either.
resource "aws_cloudwatch_metric_alarm" "pool_available_low" {
  alarm_name          = "${var.name}-pool-available-low"
  alarm_description   = "Fewer than ${var.pool_available_threshold} sandboxes available: refill the pool before labs get POOL_EXHAUSTED."
  namespace           = var.metrics_namespace
  metric_name         = var.pool_metric_name
  dimensions          = { status = "available" }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  comparison_operator = "LessThanThreshold"
  threshold           = var.pool_available_threshold
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "deletion_failed" {
  alarm_name          = "${var.name}-deletion-failed"
  alarm_description   = "Sandboxes whose deletion exhausted its retries (status deletion_failed): inspect them and retry from the admin API."
  namespace           = var.metrics_namespace
  metric_name         = var.pool_metric_name
  dimensions          = { status = "deletion_failed" }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "missing"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}
