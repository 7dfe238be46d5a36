terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 6.0"
    }
  }

  # Remote state (partial configuration): keep the bucket, key, region and locking
  # settings in an uncommitted backend.hcl and run
  #   terraform init -backend-config=backend.hcl
  # `terraform init -backend=false` (offline validation) ignores this block.
  backend "s3" {}
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge(var.tags, {
      Service   = var.name
      ManagedBy = "terraform"
    })
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

data "aws_subnet" "public" {
  for_each = toset(var.public_subnet_ids)
  id       = each.value
}

data "aws_subnet" "private" {
  for_each = toset(var.private_subnet_ids)
  id       = each.value
}

locals {
  account_id     = data.aws_caller_identity.current.account_id
  partition      = data.aws_partition.current.partition
  region         = data.aws_region.current.name
  container_name = "broker"
  container_port = 8080

  private_subnet_azs = distinct([for subnet in data.aws_subnet.private : subnet.availability_zone])
  public_subnet_azs  = distinct([for subnet in data.aws_subnet.public : subnet.availability_zone])
}
