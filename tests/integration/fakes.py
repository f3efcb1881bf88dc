"""A local fake of the three cloud face APIs, speaking each one's documented wire format.

The real cloud APIs cannot be reached from here, so the adapters are tested against this HTTP
server on 127.0.0.1 (an ephemeral port): boto3, and ``requests`` for Azure and Face++, talk real
HTTP to it. It implements

- AWS Rekognition ``CompareFaces`` over the AWS JSON 1.1 protocol: ``POST /`` with
  ``X-Amz-Target: RekognitionService.CompareFaces``, ``Content-Type: application/x-amz-json-1.1``,
  a SigV4 ``Authorization`` header whose credential scope names ``rekognition``, base64 image
  bytes in the JSON body; errors as ``{"__type": ..., "Message": ...}`` with their documented
  status codes.
- Azure Face v1.0: ``POST /face/v1.0/detect`` (octet-stream body, ``returnFaceId=true``) and
  ``POST /face/v1.0/verify`` (JSON ``faceId1``/``faceId2``), the key in
  ``Ocp-Apim-Subscription-Key``; errors as ``{"error": {"code", "message"}}``, 429 with
  ``Retry-After``.
- Face++ v3: ``POST /facepp/v3/compare`` as ``multipart/form-data`` with ``api_key``,
  ``api_secret``, ``image_file1``, ``image_file2``; errors as ``{"error_message": ...}``,
  throttling as 403 ``CONCURRENCY_LIMIT_EXCEEDED``.

Who is in a photo is decided by the test: :meth:`FakeCloud.register` maps the SHA-256 of an
image's bytes to a person; an image it does not know has no face. :meth:`FakeCloud.script`
queues canned answers (throttling, auth failures, malformed bodies, delays) that are served
before the normal logic. The fake keeps counts of requests, never their bodies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

AWS_KEY_ID = "AKIAFAKEFAKEFAKE0001"
AWS_SECRET = "fake-secret-key"
AZURE_KEY = "fake-azure-key"
FACEPP_KEY = "fake-facepp-key"
FACEPP_SECRET = "fake-facepp-secret"

#: Scores the fake gives to same-person and different-person pairs, per API (its own scale).
SAME = {"rekognition": 98.7, "azure": 0.91, "facepp": 88.4}
DIFFERENT = {"rekognition": 4.2, "azure": 0.08, "facepp": 21.7}
FACEPP_THRESHOLDS = {"1e-3": 62.327, "1e-4": 69.101, "1e-5": 73.975}

APIS = ("rekognition", "azure_detect", "azure_verify", "facepp")


@dataclass
class Canned:
    """One scripted answer: status, body (dict -> JSON, str/bytes -> as is), headers, delay."""

    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


# Documented error answers, ready to script.
def aws_error(code: str, message: str, status: int = 400) -> Canned:
    """An AWS JSON 1.1 error (``__type`` names the exception)."""
    return Canned(
        status, {"__type": code, "Message": message}, {"Content-Type": "application/x-amz-json-1.1"}
    )


def azure_error(status: int, code: str, message: str, retry_after: str | None = None) -> Canned:
    """An Azure Face error body."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return Canned(status, {"error": {"code": code, "message": message}}, headers)


def facepp_error(status: int, message: str) -> Canned:
    """A Face++ error body."""
    return Canned(status, {"request_id": "1,fake", "time_used": 0, "error_message": message})


AWS_THROTTLED = aws_error("ThrottlingException", "Rate exceeded", 500)
AWS_THROUGHPUT = aws_error("ProvisionedThroughputExceededException", "Provisioned rate exceeded")
AZURE_THROTTLED = azure_error(
    429, "429", "Rate limit is exceeded. Try again in 1 seconds.", retry_after="1"
)
FACEPP_THROTTLED = facepp_error(403, "CONCURRENCY_LIMIT_EXCEEDED")


class FakeCloud:
    """The fake APIs on one threaded HTTP server bound to 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        self.people: dict[str, str] = {}
        self.scripts: dict[str, deque[Canned]] = {api: deque() for api in APIS}
        self.calls: Counter[str] = Counter()
        self.rejected: list[str] = []  # why the fake refused a request that broke the wire format
        self.face_ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def register(self, data: bytes, person: str) -> None:
        """Say that the image with these exact bytes shows ``person``."""
        self.people[hashlib.sha256(data).hexdigest()] = person

    def person(self, data: bytes) -> str | None:
        """Who the image shows, or None (no face)."""
        return self.people.get(hashlib.sha256(data).hexdigest())

    def script(self, api: str, *answers: Canned) -> None:
        """Queue answers for ``api`` (one of :data:`APIS`), served before the normal logic."""
        with self._lock:
            self.scripts[api].extend(answers)

    def reset(self) -> None:
        """Forget scripts and counts (not the registered people)."""
        with self._lock:
            for q in self.scripts.values():
                q.clear()
            self.calls.clear()
            self.rejected.clear()

    def _next(self, api: str) -> Canned | None:
        with self._lock:
            self.calls[api] += 1
            return self.scripts[api].popleft() if self.scripts[api] else None


_SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<sig>[0-9a-f]{64})$"
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeCloud/1.0"

    @property
    def fake(self) -> FakeCloud:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: no request logging
        pass

    def _send(self, answer: Canned) -> None:
        if answer.delay:
            time.sleep(answer.delay)
        body = answer.body
        if isinstance(body, (dict, list)):
            payload = json.dumps(body).encode()
        elif isinstance(body, str):
            payload = body.encode()
        else:
            payload = bytes(body)
        try:
            self.send_response(answer.status)
            headers = {"Content-Type": "application/json", **answer.headers}
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (a timeout test)

    def _refuse(self, why: str, answer: Canned) -> None:
        self.fake.rejected.append(why)
        self._send(answer)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        path = urlparse(self.path).path
        if path == "/" and self.headers.get("X-Amz-Target"):
            self._rekognition(body)
        elif path == "/face/v1.0/detect":
            self._azure_detect(body)
        elif path == "/face/v1.0/verify":
            self._azure_verify(body)
        elif path == "/facepp/v3/compare":
            self._facepp(body)
        else:
            self._send(
                Canned(404, {"error": {"code": "NotFound", "message": f"no such path {path}"}})
            )

    # -- AWS Rekognition (JSON 1.1) -------------------------------------------------------------

    def _rekognition(self, body: bytes) -> None:
        canned = self.fake._next("rekognition")
        if self.headers.get("X-Amz-Target") != "RekognitionService.CompareFaces":
            return self._refuse(
                "X-Amz-Target", aws_error("UnknownOperationException", "unknown operation")
            )
        if self.headers.get("Content-Type") != "application/x-amz-json-1.1":
            return self._refuse(
                "Content-Type", aws_error("SerializationException", "bad content type")
            )
        auth = _SIGV4.match(self.headers.get("Authorization", ""))
        if not auth or auth["service"] != "rekognition" or not self.headers.get("X-Amz-Date"):
            return self._refuse(
                "SigV4",
                aws_error("MissingAuthenticationTokenException", "Missing Authentication Token"),
            )
        if canned is not None:
            return self._send(canned)
        if auth["key"] != AWS_KEY_ID:
            return self._send(
                aws_error(
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                )
            )
        try:
            doc = json.loads(body)
            source = base64.b64decode(doc["SourceImage"]["Bytes"], validate=True)
            target = base64.b64decode(doc["TargetImage"]["Bytes"], validate=True)
            threshold = float(doc.get("SimilarityThreshold", 80.0))
        except (ValueError, KeyError, TypeError):
            return self._refuse(
                "body", aws_error("SerializationException", "cannot parse the request body")
            )
        a, b = self.fake.person(source), self.fake.person(target)
        if a is None or b is None:
            return self._send(
                aws_error("InvalidParameterException", "Request has invalid parameters")
            )
        similarity = SAME["rekognition"] if a == b else DIFFERENT["rekognition"]
        face = {
            "BoundingBox": {"Width": 0.3, "Height": 0.4, "Left": 0.35, "Top": 0.2},
            "Confidence": 99.9,
        }
        matched = similarity >= threshold
        self._send(
            Canned(
                200,
                {
                    "SourceImageFace": face,
                    "FaceMatches": [{"Similarity": similarity, "Face": face}] if matched else [],
                    "UnmatchedFaces": [] if matched else [face],
                },
                {
                    "Content-Type": "application/x-amz-json-1.1",
                    "x-amzn-RequestId": str(uuid.uuid4()),
                },
            )
        )

    # -- Azure Face v1.0 ------------------------------------------------------------------------

    def _azure_auth(self) -> bool:
        if self.headers.get("Ocp-Apim-Subscription-Key") != AZURE_KEY:
            self._send(
                azure_error(
                    401,
                    "401",
                    "Access denied due to invalid subscription key or wrong API endpoint. "
                    "Make sure to provide a valid key for an active subscription and use a correct "
                    "regional API endpoint for your resource.",
                )
            )
            return False
        return True

    def _azure_detect(self, body: bytes) -> None:
        canned = self.fake._next("azure_detect")
        query = parse_qs(urlparse(self.path).query)
        if query.get("returnFaceId") != ["true"]:
            return self._refuse(
                "returnFaceId",
                azure_error(400, "BadArgument", "returnFaceId must be true to verify"),
            )
        if self.headers.get("Content-Type") != "application/octet-stream":
            return self._refuse(
                "Content-Type", azure_error(415, "BadArgument", "Invalid Media Type.")
            )
        if canned is not None:
            return self._send(canned)
        if not self._azure_auth():
            return None
        person = self.fake.person(body)
        if person is None:
            return self._send(Canned(200, []))
        face_id = str(uuid.uuid4())
        self.fake.face_ids[face_id] = person
        self._send(
            Canned(
                200,
                [
                    {
                        "faceId": face_id,
                        "faceRectangle": {"top": 40, "left": 50, "width": 120, "height": 150},
                    },
                    {
                        "faceId": str(uuid.uuid4()),
                        "faceRectangle": {"top": 5, "left": 5, "width": 30, "height": 30},
                    },
                ],
            )
        )

    def _azure_verify(self, body: bytes) -> None:
        canned = self.fake._next("azure_verify")
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._refuse(
                "Content-Type", azure_error(415, "BadArgument", "Invalid Media Type.")
            )
        if canned is not None:
            return self._send(canned)
        if not self._azure_auth():
            return None
        try:
            doc = json.loads(body)
            a, b = self.fake.face_ids[doc["faceId1"]], self.fake.face_ids[doc["faceId2"]]
        except (ValueError, KeyError, TypeError):
            return self._send(azure_error(400, "BadArgument", "Face ID is invalid."))
        same = a == b
        self._send(
            Canned(
                200,
                {"isIdentical": same, "confidence": SAME["azure"] if same else DIFFERENT["azure"]},
            )
        )

    # -- Face++ v3 --------------------------------------------------------------------------------

    def _facepp(self, body: bytes) -> None:
        canned = self.fake._next("facepp")
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            return self._refuse("Content-Type", facepp_error(400, "BAD_ARGUMENTS"))
        message = BytesParser(policy=policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        fields: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                fields[str(name)] = part.get_payload(decode=True) or b""
        for name in ("api_key", "api_secret", "image_file1", "image_file2"):
            if name not in fields:
                return self._refuse(name, facepp_error(400, f"MISSING_ARGUMENTS: {name}"))
        if canned is not None:
            return self._send(canned)
        if (
            fields["api_key"].decode() != FACEPP_KEY
            or fields["api_secret"].decode() != FACEPP_SECRET
        ):
            return self._send(facepp_error(401, "AUTHENTICATION_ERROR"))
        a, b = self.fake.person(fields["image_file1"]), self.fake.person(fields["image_file2"])
        face = {
            "face_rectangle": {"top": 40, "left": 50, "width": 120, "height": 150},
            "face_token": uuid.uuid4().hex,
        }
        answer: dict[str, Any] = {
            "request_id": f"{int(time.time())},{uuid.uuid4()}",
            "time_used": 473,
            "image_id1": uuid.uuid4().hex,
            "image_id2": uuid.uuid4().hex,
            "faces1": [face] if a else [],
            "faces2": [face] if b else [],
        }
        if a and b:
            answer["confidence"] = SAME["facepp"] if a == b else DIFFERENT["facepp"]
            answer["thresholds"] = FACEPP_THRESHOLDS
        self._send(Canned(200, answer))
