# ---------------------------------------------------------------------------------
# Naming and placement
# ---------------------------------------------------------------------------------

variable "name" {
  description = "Name prefix for every resource (ECS cluster and service, ALB, roles, log groups, secrets). Lowercase letters, digits and hyphens; at most 24 characters so derived ALB and target group names fit AWS's 32-character limit."
  type        = string
  default     = "sandbox-broker"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,23}$", var.name))
    error_message = "name must match ^[a-z][a-z0-9-]{0,23}$."
  }
}

variable "aws_region" {
  description = "AWS region to deploy into, for example eu-west-1."
  type        = string
}

variable "tags" {
  description = "Extra tags applied to every resource through the provider's default_tags."
  type        = map(string)
  default     = {}
}

variable "vpc_id" {
  description = "ID of the existing VPC that holds the subnets below."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets for the internet-facing ALB: at least two, in at least two Availability Zones."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "public_subnet_ids needs at least two subnets (two Availability Zones)."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets for the Fargate tasks: at least two, in at least two Availability Zones, with egress (NAT or VPC endpoints) to DynamoDB, Secrets Manager, ECR, CloudWatch Logs and the CSP API."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids needs at least two subnets (two Availability Zones)."
  }
}

variable "allowed_ingress_cidrs" {
  description = "CIDR blocks allowed to reach the ALB on ports 80 (redirect only) and 443. The default is the whole internet, since lab platforms call from changing addresses; narrow it when you can."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

# ---------------------------------------------------------------------------------
# Container and service
# ---------------------------------------------------------------------------------

variable "container_image" {
  description = "Image reference for the broker, ideally pinned by digest (123456789012.dkr.ecr.eu-west-1.amazonaws.com/sandbox-broker@sha256:...). Built from the repository's Dockerfile."
  type        = string
}

variable "cpu_architecture" {
  description = "CPU architecture of the image and the Fargate tasks: X86_64 or ARM64."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "task_cpu" {
  description = "Fargate task CPU units (1024 = 1 vCPU), shared by the broker and the metrics sidecar."
  type        = number
  default     = 1024
}

variable "task_memory" {
  description = "Fargate task memory in MiB; must be a valid combination with task_cpu."
  type        = number
  default     = 2048
}

variable "uvicorn_workers" {
  description = "Worker processes per task (`sandbox-broker serve --workers`). Prefer more tasks over more workers; with several, /metrics sums the workers' values (prometheus-client multiprocess mode)."
  type        = number
  default     = 1

  validation {
    condition     = var.uvicorn_workers >= 1 && var.uvicorn_workers <= 8
    error_message = "uvicorn_workers must be between 1 and 8."
  }
}

variable "desired_count" {
  description = "Tasks started by the first apply. Autoscaling owns the count afterwards (Terraform ignores later drift). At least 2, spread over two Availability Zones."
  type        = number
  default     = 2

  validation {
    condition     = var.desired_count >= 2
    error_message = "desired_count must be at least 2 (one task per Availability Zone)."
  }
}

variable "min_capacity" {
  description = "Autoscaling floor: never fewer tasks than this. At least 2."
  type        = number
  default     = 2

  validation {
    condition     = var.min_capacity >= 2
    error_message = "min_capacity must be at least 2."
  }
}

variable "max_capacity" {
  description = "Autoscaling ceiling. Background jobs are safe on every replica (each job runs under a lease in the table), so this only bounds cost and DynamoDB traffic."
  type        = number
  default     = 10
}

variable "cpu_target_percent" {
  description = "Target-tracking goal for the service's average CPU utilisation, in percent."
  type        = number
  default     = 60

  validation {
    condition     = var.cpu_target_percent >= 10 && var.cpu_target_percent <= 90
    error_message = "cpu_target_percent must be between 10 and 90."
  }
}

variable "requests_per_target" {
  description = "Target-tracking goal for ALB requests per task per minute (ALBRequestCountPerTarget)."
  type        = number
  default     = 6000
}

# ---------------------------------------------------------------------------------
# Application settings (non-secret; secrets live in Secrets Manager, see secrets.tf)
# ---------------------------------------------------------------------------------

variable "table_name" {
  description = "DynamoDB table name, passed to the tasks as DDB_TABLE_NAME."
  type        = string
  default     = "sandbox-broker"
}

variable "table_deletion_protection" {
  description = "Refuse DeleteTable on the broker's table (turn off only to tear the stack down on purpose)."
  type        = bool
  default     = true
}

variable "broker_provider" {
  description = "Sandbox provider (BROKER_PROVIDER): csp for the real CSP HTTP API, simulated for a demo stack."
  type        = string
  default     = "csp"

  validation {
    condition     = contains(["csp", "simulated"], var.broker_provider)
    error_message = "broker_provider must be csp or simulated."
  }
}

variable "csp_base_url" {
  description = "Base URL of the CSP API (CSP_BASE_URL); required when broker_provider is csp. Its token is the CSP_API_TOKEN secret, never a variable."
  type        = string
  default     = ""

  validation {
    condition     = var.csp_base_url == "" || can(regex("^https://", var.csp_base_url))
    error_message = "csp_base_url must be an https:// URL."
  }
}

variable "log_level" {
  description = "Application log level (LOG_LEVEL): DEBUG, INFO, WARNING or ERROR."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "extra_environment" {
  description = "Further non-secret settings for the broker container, as ENV_NAME => value (see app/config.py: field foo_bar is env FOO_BAR), e.g. { LAB_DURATION_HOURS = \"4\" }. Secret names are refused here: they come from Secrets Manager."
  type        = map(string)
  default     = {}

  validation {
    condition = length(setintersection(keys(var.extra_environment), [
      "BROKER_API_TOKEN", "BROKER_ADMIN_TOKEN", "METRICS_TOKEN", "CSP_API_TOKEN", "CURSOR_SECRET",
      "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    ])) == 0
    error_message = "extra_environment must not carry tokens, secrets or AWS credentials; they are ECS secrets from Secrets Manager (or the task role)."
  }
}

variable "secret_recovery_window_days" {
  description = "Days a deleted Secrets Manager secret can still be restored (0 deletes at once; 7 to 30 otherwise)."
  type        = number
  default     = 7
}

# ---------------------------------------------------------------------------------
# Load balancer and WAF
# ---------------------------------------------------------------------------------

variable "certificate_arn" {
  description = "ARN of the ACM certificate for the HTTPS listener (in the same region as the ALB)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "alb_deletion_protection" {
  description = "Enable deletion protection on the ALB."
  type        = bool
  default     = true
}

variable "alb_access_logs_bucket" {
  description = "S3 bucket for ALB access logs (its policy must allow the regional ELB account to write). null disables access logs."
  type        = string
  default     = null
}

variable "waf_rate_limit" {
  description = "WAF rate rule: requests one client IP may send in any 5-minute window before WAF blocks it (AWS minimum is 10). Size it for the busiest lab: one NAT address can front a whole classroom."
  type        = number
  default     = 2000

  validation {
    condition     = var.waf_rate_limit >= 10
    error_message = "waf_rate_limit must be at least 10."
  }
}

# ---------------------------------------------------------------------------------
# Observability
# ---------------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the application and WAF log groups, in days (a value CloudWatch Logs accepts). A year by default: the logs are the audit trail of who held which sandbox."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of CloudWatch Logs' retention values."
  }
}

variable "adot_image" {
  description = "AWS Distro for OpenTelemetry collector image for the sidecar that scrapes /metrics into CloudWatch (EMF). Pin a version you have vetted."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.40.0"
}

variable "metrics_namespace" {
  description = "CloudWatch namespace the sidecar writes the broker's Prometheus metrics to."
  type        = string
  default     = "SandboxBroker"
}

variable "pool_metric_name" {
  description = "Name of the Prometheus gauge that reports the pool size by `status` label at /metrics; the pool alarms read it from CloudWatch under the same name."
  type        = string
  default     = "broker_pool_sandboxes"
}

variable "alarm_actions" {
  description = "ARNs notified when an alarm fires or recovers (for example an SNS topic wired to paging)."
  type        = list(string)
  default     = []
}

variable "error_rate_threshold_percent" {
  description = "Alarm when 5xx responses (from targets and the ALB) exceed this percentage of requests in 2 of 3 minutes."
  type        = number
  default     = 5
}

variable "error_rate_min_requests" {
  description = "Minutes with fewer requests than this do not count towards the 5xx-rate alarm (one error in two requests is not an outage)."
  type        = number
  default     = 20
}

variable "p99_latency_threshold_seconds" {
  description = "Alarm when the p99 target response time stays above this many seconds for 3 of 5 minutes."
  type        = number
  default     = 1
}

variable "pool_available_threshold" {
  description = "Alarm when fewer sandboxes than this are available for 10 minutes (refill the pool before labs see POOL_EXHAUSTED)."
  type        = number
  default     = 20
}
