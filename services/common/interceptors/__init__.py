"""Server interceptors, one concern per module: metrics, access log, error mapping."""

from faceoff.common.interceptors.access_log import AccessLogInterceptor
from faceoff.common.interceptors.errors import ErrorInterceptor
from faceoff.common.interceptors.metrics import MetricsInterceptor, ServerMetrics

__all__ = ["AccessLogInterceptor", "ErrorInterceptor", "MetricsInterceptor", "ServerMetrics"]
