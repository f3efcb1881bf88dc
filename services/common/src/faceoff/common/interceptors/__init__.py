"""Server interceptors, one concern per module: metrics, access log, error mapping, auth, rate limits."""

from faceoff.common.interceptors.access_log import AccessLogInterceptor
from faceoff.common.interceptors.auth import AuthInterceptor
from faceoff.common.interceptors.errors import ErrorInterceptor
from faceoff.common.interceptors.metrics import MetricsInterceptor, ServerMetrics
from faceoff.common.interceptors.rate_limit import RateLimitInterceptor, TokenBuckets

__all__ = [
    "AccessLogInterceptor",
    "AuthInterceptor",
    "ErrorInterceptor",
    "MetricsInterceptor",
    "RateLimitInterceptor",
    "ServerMetrics",
    "TokenBuckets",
]
