"""AWS event mappers: realistic payloads as AWS documents them, and malformed ones.

Payload sources: EventBridge "Object Created" (S3 User Guide, EventBridge event message
structure), S3 event notification message structure, CloudWatch alarm SNS notifications and
"CloudWatch Alarm State Change" events (CloudWatch User Guide), Model Monitor CloudWatch metrics
(`aws/sagemaker/Endpoints/data-metrics`, `feature_baseline_drift_<feature>`) and the
"SageMaker Processing Job State Change" event.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starters.events.aws import (
    cloudwatch_alarm,
    model_monitor_violation,
    s3_notification_records,
    s3_object_created,
)
from starters.events.mapped import MappedEvent, UnknownEventShape
from workflows.coordinator.triggers import AlarmState, Severity, TriggerKind

OBJECT_CREATED: dict[str, Any] = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "123456789012",
    "time": "2026-11-12T00:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:s3:::churn-data"],
    "detail": {
        "version": "0",
        "bucket": {"name": "churn-data"},
        "object": {
            "key": "labelled/date=2026-11-11/part-0.parquet",
            "size": 52143,
            "etag": "b1946ac92492d2347c6235b4d2611184",
            "version-id": "IYV3p45BhZA2OzbVPfpEF5UKr4ZwTbhc",
            "sequencer": "617f08299329d189",
        },
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": "123456789012",
        "source-ip-address": "1.2.3.4",
        "reason": "PutObject",
    },
}

S3_RECORDS: dict[str, Any] = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2026-11-12T00:00:00.000Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:AIDAINPONIXQXHT3IKHL2"},
            "requestParameters": {"sourceIPAddress": "1.2.3.4"},
            "responseElements": {
                "x-amz-request-id": "C3D13FE58DE4C810",
                "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "labelled-data",
                "bucket": {
                    "name": "churn-data",
                    "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                    "arn": "arn:aws:s3:::churn-data",
                },
                "object": {
                    "key": "labelled/date%3D2026-11-11/part+0.parquet",
                    "size": 1024,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                    "sequencer": "0055AED6DCD90281E5",
                },
            },
        },
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2026-11-12T00:00:01.000Z",
            "eventName": "ObjectRemoved:Delete",
            "s3": {
                "bucket": {"name": "churn-data"},
                "object": {"key": "labelled/old.parquet", "sequencer": "0055AED6DCD90281E6"},
            },
        },
    ]
}

ALARM_MESSAGE: dict[str, Any] = {
    "AlarmName": "churn-invocation-5xx",
    "AlarmDescription": None,
    "AWSAccountId": "123456789012",
    "AlarmConfigurationUpdatedTimestamp": "2026-11-01T10:00:00.000+0000",
    "NewStateValue": "ALARM",
    "NewStateReason": "Threshold Crossed: 1 out of the last 1 datapoints [12.0 (12/11/26 09:59:00)]"
    " was greater than the threshold (5.0) (minimum 1 datapoint for OK -> ALARM transition).",
    "StateChangeTime": "2026-11-12T10:00:37.543+0000",
    "Region": "US East (N. Virginia)",
    "AlarmArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:churn-invocation-5xx",
    "OldStateValue": "OK",
    "OKActions": [],
    "AlarmActions": ["arn:aws:sns:us-east-1:123456789012:retrain-alarms"],
    "InsufficientDataActions": [],
    "Trigger": {
        "MetricName": "Invocation5XXErrors",
        "Namespace": "AWS/SageMaker",
        "StatisticType": "Statistic",
        "Statistic": "SUM",
        "Unit": None,
        "Dimensions": [
            {"value": "churn", "name": "EndpointName"},
            {"value": "v3", "name": "VariantName"},
        ],
        "Period": 60,
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 5.0,
        "TreatMissingData": "missing",
        "EvaluateLowSampleCountPercentile": "",
    },
}


def sns(
    message: dict[str, Any] | str, message_id: str = "0c5f8f5e-3c11-5a3f-9b7e-1a0c7d1f9a01"
) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:retrain-alarms",
        "Subject": 'ALARM: "churn-invocation-5xx" in US East (N. Virginia)',
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": "2026-11-12T10:00:37.600Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+..",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&Subscri...",
    }


ALARM_STATE_CHANGE: dict[str, Any] = {
    "version": "0",
    "id": "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92",
    "detail-type": "CloudWatch Alarm State Change",
    "source": "aws.cloudwatch",
    "account": "123456789012",
    "time": "2026-11-12T17:04:40Z",
    "region": "us-east-1",
    "resources": ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:churn-latency"],
    "detail": {
        "alarmName": "churn-latency",
        "configuration": {
            "description": "p99 latency of the churn endpoint",
            "metrics": [
                {
                    "id": "30b6c6b2-a864-43a2-4877-c09a1afc3b87",
                    "metricStat": {
                        "metric": {
                            "dimensions": {"EndpointName": "churn", "VariantName": "v4"},
                            "name": "ModelLatency",
                            "namespace": "AWS/SageMaker",
                        },
                        "period": 300,
                        "stat": "p99",
                    },
                    "returnData": True,
                }
            ],
        },
        "previousState": {
            "reason": "Threshold Crossed: ...",
            "timestamp": "2026-11-12T16:59:40.985+0000",
            "value": "OK",
        },
        "state": {
            "reason": "Threshold Crossed: 1 out of the last 1 datapoints [250000.0 (12/11/26 "
            "16:59:00)] was greater than the threshold (200000.0).",
            "reasonData": json.dumps(
                {
                    "version": "1.0",
                    "queryDate": "2026-11-12T17:04:40.985+0000",
                    "startDate": "2026-11-12T16:59:00.000+0000",
                    "statistic": "p99",
                    "period": 300,
                    "recentDatapoints": [250000.0],
                    "threshold": 200000.0,
                }
            ),
            "timestamp": "2026-11-12T17:04:40.989+0000",
            "value": "ALARM",
        },
    },
}

DRIFT_ALARM_MESSAGE: dict[str, Any] = ALARM_MESSAGE | {
    "AlarmName": "churn-income-drift",
    "NewStateReason": "Threshold Crossed: 1 datapoint [0.42 (12/11/26 10:00:00)] was greater "
    "than the threshold (0.2).",
    "Trigger": ALARM_MESSAGE["Trigger"]
    | {
        "MetricName": "feature_baseline_drift_income",
        "Namespace": "aws/sagemaker/Endpoints/data-metrics",
        "Statistic": "MAXIMUM",
        "Dimensions": [
            {"value": "churn", "name": "Endpoint"},
            {"value": "churn-data-quality", "name": "MonitoringSchedule"},
        ],
        "Threshold": 0.2,
    },
}

MONITORING_EXECUTION: dict[str, Any] = {
    "version": "0",
    "id": "5d1b2b0a-2f8c-4a55-8f3a-7ad1b4d2c9e1",
    "detail-type": "SageMaker Processing Job State Change",
    "source": "aws.sagemaker",
    "account": "123456789012",
    "time": "2026-11-12T11:05:12Z",
    "region": "us-east-1",
    "resources": [
        "arn:aws:sagemaker:us-east-1:123456789012:processing-job/"
        "model-monitoring-202611121100-8d6c7e2f5a1b3c4d"
    ],
    "detail": {
        "ProcessingInputs": [
            {
                "InputName": "endpoint_input_1",
                "S3Input": {
                    "S3Uri": "s3://churn-capture/churn/AllTraffic/2026/11/12/10",
                    "LocalPath": "/opt/ml/processing/input/endpoint",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "result",
                    "S3Output": {
                        "S3Uri": "s3://churn-monitor/reports/churn-data-quality/2026/11/12/11",
                        "LocalPath": "/opt/ml/processing/output",
                        "S3UploadMode": "Continuous",
                    },
                }
            ]
        },
        "ProcessingJobName": "model-monitoring-202611121100-8d6c7e2f5a1b3c4d",
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 1,
                "InstanceType": "ml.m5.xlarge",
                "VolumeSizeInGB": 20,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "AppSpecification": {
            "ImageUri": "156813124566.dkr.ecr.us-east-1.amazonaws.com/"
            "sagemaker-model-monitor-analyzer"
        },
        "Environment": {
            "dataset_format": '{"sagemakerCaptureJson":{"captureIndexNames":["endpointInput"]}}',
            "publish_cloudwatch_metrics": "Enabled",
        },
        "RoleArn": "arn:aws:iam::123456789012:role/retrain-sagemaker",
        "ProcessingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:processing-job/"
        "model-monitoring-202611121100-8d6c7e2f5a1b3c4d",
        "ProcessingJobStatus": "Completed",
        "ExitMessage": "CompletedWithViolations: Job completed successfully with 4 violations.",
        "ProcessingEndTime": 1794481512000,
        "LastModifiedTime": 1794481512000,
        "CreationTime": 1794481200000,
        "MonitoringScheduleArn": "arn:aws:sagemaker:us-east-1:123456789012:monitoring-schedule/"
        "churn-data-quality",
        "Tags": {},
    },
}


# ---- S3 ------------------------------------------------------------------------------------


def test_eventbridge_object_created() -> None:
    mapped = s3_object_created(OBJECT_CREATED)
    uri = "s3://churn-data/labelled/date=2026-11-11/part-0.parquet"
    assert mapped.uri == uri
    event = mapped.event
    assert event.kind == TriggerKind.DATA_ARRIVED and event.source == "aws.s3"
    assert event.event_id == "17793124-05d4-b198-2fde-7ededc63b103"
    assert event.occurred_at == datetime(2026, 11, 12, tzinfo=UTC)
    assert event.data is not None and event.data.uri == uri and event.data.size_bytes == 52143


def test_s3_notification_records_created_only_and_url_decoded() -> None:
    [mapped] = s3_notification_records(S3_RECORDS)
    assert mapped.uri == "s3://churn-data/labelled/date=2026-11-11/part 0.parquet"
    assert mapped.event.data is not None and mapped.event.data.size_bytes == 1024
    assert mapped.event.event_id is not None and len(mapped.event.event_id) <= 200
    # The same write gives the same id (deduplication); inside SNS too.
    [again] = s3_notification_records(sns(S3_RECORDS))
    assert again.event == mapped.event


def test_s3_test_event_maps_to_nothing() -> None:
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-11-12T00:00:00.000Z",
        "Bucket": "churn-data",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    assert s3_notification_records(test_event) == []


# ---- alarms --------------------------------------------------------------------------------


def test_cloudwatch_alarm_from_sns() -> None:
    mapped = cloudwatch_alarm(sns(ALARM_MESSAGE))
    assert mapped.endpoint == "churn" and mapped.alarm == "churn-invocation-5xx"
    event = mapped.event
    assert event.kind == TriggerKind.ALARM and event.source == "aws.cloudwatch"
    assert event.event_id == "0c5f8f5e-3c11-5a3f-9b7e-1a0c7d1f9a01"
    assert event.alarm is not None and event.alarm.state == AlarmState.ALARM
    assert event.alarm.reason is not None and "greater than the threshold" in event.alarm.reason
    assert event.occurred_at == datetime(2026, 11, 12, 10, 0, 37, 543000, tzinfo=UTC)


def test_cloudwatch_alarm_from_eventbridge() -> None:
    mapped = cloudwatch_alarm(ALARM_STATE_CHANGE)
    assert mapped.endpoint == "churn" and mapped.alarm == "churn-latency"
    assert mapped.event.event_id == "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92"
    assert mapped.event.alarm is not None and mapped.event.alarm.name == "churn-latency"


def test_alarm_back_to_ok_keeps_its_state() -> None:
    mapped = cloudwatch_alarm(sns(ALARM_MESSAGE | {"NewStateValue": "OK"}))
    assert mapped.event.alarm is not None and mapped.event.alarm.state == AlarmState.OK


# ---- Model Monitor -------------------------------------------------------------------------


def test_drift_metric_alarm_maps_to_drift_with_severity_from_the_ratio() -> None:
    mapped = model_monitor_violation(sns(DRIFT_ALARM_MESSAGE))
    event = mapped.event
    assert event.kind == TriggerKind.DRIFT and event.drift is not None
    assert event.drift.features == ["income"]
    assert event.drift.score == 0.42
    # 0.42 / 0.2 = 2.1: high.
    assert event.drift.severity == Severity.HIGH
    assert mapped.endpoint == "churn" and event.drift.endpoint == "churn"
    assert mapped.monitoring_job == "churn-data-quality"
    assert mapped.alarm == "churn-income-drift"


@pytest.mark.parametrize(
    ("datapoint", "severity"), [("0.25", Severity.MEDIUM), ("0.61", Severity.CRITICAL)]
)
def test_drift_severity_mapping(datapoint: str, severity: Severity) -> None:
    message = DRIFT_ALARM_MESSAGE | {
        "NewStateReason": f"Threshold Crossed: 1 datapoint [{datapoint} (12/11/26 10:00:00)]"
    }
    drift = model_monitor_violation(sns(message)).event.drift
    assert drift is not None and drift.severity == severity


def test_monitoring_execution_with_violations_maps_to_drift() -> None:
    mapped = model_monitor_violation(MONITORING_EXECUTION)
    event = mapped.event
    assert event.kind == TriggerKind.DRIFT and event.drift is not None
    assert event.drift.severity == Severity.HIGH
    assert event.drift.report_uri == (
        "s3://churn-monitor/reports/churn-data-quality/2026/11/12/11/constraint_violations.json"
    )
    assert mapped.monitoring_job == "churn-data-quality"
    assert event.event_id == "5d1b2b0a-2f8c-4a55-8f3a-7ad1b4d2c9e1"
    assert event.metadata["violations"] == 4


def test_monitoring_execution_without_violations_is_refused() -> None:
    clean = copy.deepcopy(MONITORING_EXECUTION)
    clean["detail"]["ExitMessage"] = "Completed: Job completed successfully with no violations."
    with pytest.raises(ValueError, match="no violations"):
        model_monitor_violation(clean)


def test_an_ordinary_alarm_is_not_a_monitor_violation() -> None:
    with pytest.raises(UnknownEventShape, match="feature_baseline_drift_"):
        model_monitor_violation(sns(ALARM_MESSAGE))
    with pytest.raises(ValueError, match="no drift"):
        model_monitor_violation(sns(DRIFT_ALARM_MESSAGE | {"NewStateValue": "OK"}))


DETAIL: dict[str, Any] = OBJECT_CREATED["detail"]
BAD_SIZE = DETAIL | {"object": {"key": "k", "size": "x"}}

# ---- malformed -----------------------------------------------------------------------------

Mapper = Callable[[Any], MappedEvent | list[MappedEvent]]
MAPPERS: list[tuple[Mapper, dict[str, Any]]] = [
    (s3_object_created, OBJECT_CREATED),
    (s3_notification_records, S3_RECORDS),
    (cloudwatch_alarm, sns(ALARM_MESSAGE)),
    (cloudwatch_alarm, ALARM_STATE_CHANGE),
    (model_monitor_violation, sns(DRIFT_ALARM_MESSAGE)),
    (model_monitor_violation, MONITORING_EXECUTION),
]


@pytest.mark.parametrize(
    ("mapper", "payload"),
    [
        (s3_object_created, {}),
        (s3_object_created, OBJECT_CREATED | {"detail": {"bucket": {"name": "b"}}}),
        (s3_object_created, OBJECT_CREATED | {"time": "yesterday"}),
        (s3_object_created, OBJECT_CREATED | {"detail": DETAIL | {"object": {"size": 1}}}),
        (s3_object_created, OBJECT_CREATED | {"detail": BAD_SIZE}),
        (s3_notification_records, {"Records": "none"}),
        (s3_notification_records, {"Records": [{"eventName": "ObjectCreated:Put"}]}),
        (cloudwatch_alarm, sns("{not json")),
        (cloudwatch_alarm, sns("[1, 2]")),
        (cloudwatch_alarm, sns(ALARM_MESSAGE | {"NewStateValue": "ON_FIRE"})),
        (cloudwatch_alarm, sns(ALARM_MESSAGE | {"AlarmName": 7})),
        (cloudwatch_alarm, {"source": "aws.ec2"}),
        (cloudwatch_alarm, ALARM_STATE_CHANGE | {"detail": {"alarmName": "x"}}),
        (model_monitor_violation, MONITORING_EXECUTION | {"detail": []}),
        (model_monitor_violation, []),
    ],
)  # fmt: skip
def test_malformed_payloads_are_value_errors(mapper: Mapper, payload: Any) -> None:
    with pytest.raises(ValueError):
        mapper(payload)


def _mutations(value: Any) -> st.SearchStrategy[Any]:
    junk = st.one_of(
        st.none(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=5),
        st.lists(st.none(), max_size=2),
        st.just({}),
    )
    if isinstance(value, dict) and value:
        keys = sorted(value)
        return st.one_of(
            st.sampled_from(keys).map(lambda k: {x: v for x, v in value.items() if x != k}),
            st.tuples(st.sampled_from(keys), junk).map(lambda kv: value | {kv[0]: kv[1]}),
            st.sampled_from(keys).flatmap(
                lambda k: _mutations(value[k]).map(lambda inner: value | {k: inner})
            ),
        )
    if isinstance(value, list) and value:
        return _mutations(value[0]).map(lambda inner: [inner, *value[1:]])
    if isinstance(value, str) and value.startswith(("{", "[")):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return junk
        return st.one_of(junk, _mutations(parsed).map(json.dumps))
    return junk


@pytest.mark.parametrize(("mapper", "payload"), MAPPERS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutated_payloads_map_or_raise_value_error(
    mapper: Mapper, payload: dict[str, Any], data: st.DataObject
) -> None:
    mutated = data.draw(_mutations(payload))
    with contextlib.suppress(ValueError):
        mapper(mutated)
