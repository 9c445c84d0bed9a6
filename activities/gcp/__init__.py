"""The Vertex AI backend (google-cloud-aiplatform's GAPIC v1 clients): GCS, CustomJob and
PipelineJob, Model Registry, endpoints and traffic split, Cloud Monitoring, Model Monitoring."""
