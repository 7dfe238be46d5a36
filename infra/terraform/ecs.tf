# ECS on Fargate: at least two tasks in private subnets across two Availability
# Zones, behind the ALB, with a deployment circuit breaker that rolls back a release
# whose tasks do not become healthy.
#
# Every replica runs the background jobs (sync, cleanup, expiry, stale deletion);
# each job takes a lease item (PK=LEASE#<job>) with a conditional write, so one
# replica at a time does a pass and another takes over when a holder dies.

resource "aws_ecs_cluster" "broker" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  configuration {
    # ECS Exec stays off (enable_execute_command is unset); should it ever be turned
    # on, sessions are encrypted with the broker's key and audited to CloudWatch.
    execute_command_configuration {
      kms_key_id = aws_kms_key.broker.arn
      logging    = "OVERRIDE"

      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = aws_cloudwatch_log_group.app.name
      }
    }
  }
}

locals {
  # Non-secret settings only; the extra_environment validation refuses secret names.
  broker_environment = [
    { name = "BROKER_ENV", value = "production" },
    { name = "BROKER_STORE", value = "dynamodb" },
    { name = "DDB_TABLE_NAME", value = aws_dynamodb_table.broker.name },
    { name = "AWS_REGION", value = local.region },
    { name = "BROKER_PROVIDER", value = var.broker_provider },
    { name = "CSP_BASE_URL", value = var.csp_base_url },
    { name = "LOG_LEVEL", value = var.log_level },
    # The ALB's nodes live in the public subnets: believe their X-Forwarded-For, so the
    # service's own per-IP rate limit sees the real client address.
    { name = "TRUSTED_PROXIES", value = join(",", sort([for subnet in data.aws_subnet.public : subnet.cidr_block])) },
  ]

  # Tokens reach the container as ECS secrets, resolved from Secrets Manager by the
  # agent at task start (a restart picks up a new value; see docs/deployment.md).
  broker_secrets = [
    { name = "BROKER_API_TOKEN", valueFrom = aws_secretsmanager_secret.broker["BROKER_API_TOKEN"].arn },
    { name = "BROKER_ADMIN_TOKEN", valueFrom = aws_secretsmanager_secret.broker["BROKER_ADMIN_TOKEN"].arn },
    { name = "METRICS_TOKEN", valueFrom = aws_secretsmanager_secret.broker["METRICS_TOKEN"].arn },
    { name = "CSP_API_TOKEN", valueFrom = aws_secretsmanager_secret.broker["CSP_API_TOKEN"].arn },
    { name = "CURSOR_SECRET", valueFrom = aws_secretsmanager_secret.broker["CURSOR_SECRET"].arn },
  ]

  log_options = {
    awslogs-group   = aws_cloudwatch_log_group.app.name
    awslogs-region  = local.region
    mode            = "non-blocking"
    max-buffer-size = "4m"
  }

  broker_container = {
    name      = local.container_name
    image     = var.container_image
    essential = true
    user      = "10001:10001"
    command = [
      "sandbox-broker", "serve", "--host", "0.0.0.0",
      "--port", tostring(local.container_port), "--workers", tostring(var.uvicorn_workers),
    ]
    portMappings           = [{ containerPort = local.container_port, protocol = "tcp" }]
    environment            = concat(local.broker_environment, [for key, value in var.extra_environment : { name = key, value = value }])
    secrets                = local.broker_secrets
    readonlyRootFilesystem = true
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    linuxParameters        = { initProcessEnabled = true }
    stopTimeout            = 30
    # Liveness (no I/O); the ALB checks readiness on /readyz.
    healthCheck = {
      command     = ["CMD", "python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:${local.container_port}/healthz', timeout=2).status == 200 else 1)"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 15
    }
    logConfiguration = {
      logDriver = "awslogs"
      options   = merge(local.log_options, { awslogs-stream-prefix = "broker" })
    }
  }

  metrics_sidecar = {
    name                   = "metrics-sidecar"
    image                  = var.adot_image
    essential              = false
    readonlyRootFilesystem = true
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    environment            = [{ name = "AOT_CONFIG_CONTENT", value = yamlencode(local.adot_config) }]
    secrets = [
      { name = "METRICS_TOKEN", valueFrom = aws_secretsmanager_secret.broker["METRICS_TOKEN"].arn },
    ]
    dependsOn = [{ containerName = local.container_name, condition = "START" }]
    logConfiguration = {
      logDriver = "awslogs"
      options   = merge(local.log_options, { awslogs-stream-prefix = "metrics-sidecar" })
    }
  }
}

resource "aws_ecs_task_definition" "broker" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode([local.broker_container, local.metrics_sidecar])

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # Scratch space for the read-only root filesystems.
  volume {
    name = "tmp"
  }

  lifecycle {
    precondition {
      condition     = var.broker_provider != "csp" || var.csp_base_url != ""
      error_message = "broker_provider = \"csp\" needs csp_base_url (the service refuses to start without it)."
    }
  }
}

resource "aws_ecs_service" "broker" {
  name                               = var.name
  cluster                            = aws_ecs_cluster.broker.id
  task_definition                    = aws_ecs_task_definition.broker.arn
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  desired_count                      = var.desired_count
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 30
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # Fargate spreads a service's tasks across the Availability Zones of its subnets.
  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.service.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.broker.arn
    container_name   = local.container_name
    container_port   = local.container_port
  }

  lifecycle {
    # Autoscaling owns the task count after the first apply.
    ignore_changes = [desired_count]

    precondition {
      condition     = length(local.private_subnet_azs) >= 2
      error_message = "private_subnet_ids must span at least two Availability Zones."
    }
  }

  depends_on = [aws_lb_listener.https, aws_iam_role_policy.execution, aws_iam_role_policy.task]
}
