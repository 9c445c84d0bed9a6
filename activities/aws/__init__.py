"""The SageMaker backend (boto3): S3, training jobs and pipelines, Model Registry, endpoints,
CloudWatch, Application Auto Scaling, SNS."""
