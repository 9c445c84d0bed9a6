"""The Vertex AI backend (google-cloud-aiplatform): GCS, CustomJob and PipelineJob, Model
Registry, endpoints and traffic split, Cloud Monitoring, Model Monitoring."""
