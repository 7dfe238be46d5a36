output "alb_dns_name" {
  description = "DNS name of the ALB; point the service's hostname (the ACM certificate's name) at it."
  value       = aws_lb.broker.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone ID of the ALB, for a Route 53 alias record."
  value       = aws_lb.broker.zone_id
}

output "table_name" {
  description = "Name of the DynamoDB table (DDB_TABLE_NAME)."
  value       = aws_dynamodb_table.broker.name
}

output "table_arn" {
  description = "ARN of the DynamoDB table; the task role may use only it and its indexes."
  value       = aws_dynamodb_table.broker.arn
}

output "ecs_cluster_name" {
  description = "ECS cluster name (for `aws ecs update-service --force-new-deployment`)."
  value       = aws_ecs_cluster.broker.name
}

output "ecs_service_name" {
  description = "ECS service name."
  value       = aws_ecs_service.broker.name
}

output "task_role_arn" {
  description = "IAM role the application runs as."
  value       = aws_iam_role.task.arn
}

output "execution_role_arn" {
  description = "IAM role the ECS agent uses to pull the image, write logs and read the secrets."
  value       = aws_iam_role.execution.arn
}

output "secret_arns" {
  description = "Secrets Manager secret ARNs by environment variable name. Put a value in each before the tasks can start."
  value       = { for name, secret in aws_secretsmanager_secret.broker : name => secret.arn }
}

output "app_log_group_name" {
  description = "CloudWatch log group of the broker and sidecar containers."
  value       = aws_cloudwatch_log_group.app.name
}

output "metrics_log_group_name" {
  description = "CloudWatch log group holding the sidecar's EMF events (the source of the pool metrics)."
  value       = aws_cloudwatch_log_group.metrics.name
}

output "waf_web_acl_arn" {
  description = "ARN of the WAF web ACL attached to the ALB."
  value       = aws_wafv2_web_acl.broker.arn
}

output "kms_key_arn" {
  description = "ARN of the customer-managed KMS key encrypting the table, secrets and log groups."
  value       = aws_kms_key.broker.arn
}
