"""An S3-compatible bucket through boto3 (imported here only, when a command names an s3:// URL).

Configuration is the AWS SDKs' own: credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN or AWS_PROFILE, else the Secret the s3_credentials_secret setting names (ops/s3creds.py), else
the shared credentials and config files (never from the command line); AWS_ENDPOINT_URL (or
AWS_ENDPOINT_URL_S3) for a server other than AWS; AWS_REGION, else AWS_DEFAULT_REGION or the config file (the
Secret's endpoint and region come after the environment's). coderctl adds CODERCTL_S3_ADDRESSING_STYLE
(path | virtual | auto; path when an endpoint is set, as MinIO, Ceph and rclone expect), CODERCTL_S3_SSE
(AES256 | aws:kms), CODERCTL_S3_SSE_KMS_KEY_ID and CODERCTL_S3_PART_SIZE (bytes of the first parts, default
8 MiB). Object lock retention is a setting (s3_object_lock_mode / _days, ops/s3lock.py).

Every failure becomes one line: wrong credentials and a missing bucket are configuration errors (exit 2), an
endpoint that cannot be reached or a failed request an operation failure (exit 1).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coderctl.context import App
from coderctl.errors import CoderctlError, UsageError
from coderctl.ops.files import READ_CHUNK
from coderctl.ops.s3creds import Credentials, resolve
from coderctl.ops.storage import S3URL

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
               "InvalidClientTokenId", "AuthorizationHeaderMalformed", "403", "Forbidden"}
_MISSING_BUCKET = {"NoSuchBucket"}
_NO_LOCK_CONFIGURATION = {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"}
_UNSUPPORTED = {"NotImplemented", "501", "MethodNotAllowed", "405", "InvalidRequest", "InvalidArgument"}


class S3Error(CoderctlError):
    """A request failed; the message is one line naming the bucket and what to check."""


@dataclass(frozen=True)
class Retention:
    """An object's lock: its mode (GOVERNANCE or COMPLIANCE) and until when it holds."""

    mode: str
    until: datetime


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None
    etag: str
    retention: Retention | None = None
    """Only from `head` (a listing does not tell)."""

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]


@dataclass(frozen=True)
class PendingUpload:
    key: str
    upload_id: str
    initiated: datetime | None


@dataclass(frozen=True)
class Settings:
    endpoint: str | None
    region: str | None
    addressing: str
    sse: str | None
    kms_key_id: str | None
    part_size: int = 8 << 20

    @classmethod
    def from_env(cls, fallback: Mapping[str, str] | None = None) -> Settings:
        """From the environment; endpoint and region from `fallback` (a credentials Secret) when it sets none."""
        env = os.environ
        secret = fallback or {}
        endpoint = (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or secret.get("AWS_ENDPOINT_URL_S3")
                    or secret.get("AWS_ENDPOINT_URL") or None)
        region = (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or secret.get("AWS_REGION")
                  or secret.get("AWS_DEFAULT_REGION") or None)
        addressing = env.get("CODERCTL_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
        if addressing not in ("path", "virtual", "auto"):
            raise UsageError(f"CODERCTL_S3_ADDRESSING_STYLE={addressing!r}: expected path, virtual or auto")
        sse = env.get("CODERCTL_S3_SSE") or None
        if sse not in (None, "AES256", "aws:kms"):
            raise UsageError(f"CODERCTL_S3_SSE={sse!r}: expected AES256 or aws:kms")
        part = env.get("CODERCTL_S3_PART_SIZE") or str(8 << 20)
        if not part.isdigit() or int(part) < 4096:
            raise UsageError(f"CODERCTL_S3_PART_SIZE={part!r}: expected a number of bytes (S3 needs 5 MiB or more)")
        return cls(endpoint, region, addressing, sse,
                   env.get("CODERCTL_S3_SSE_KMS_KEY_ID") or None, int(part))

    def encryption(self) -> dict[str, str]:
        """The server-side encryption arguments of an upload."""
        out: dict[str, str] = {}
        if self.sse:
            out["ServerSideEncryption"] = self.sse
        if self.kms_key_id:
            out["SSEKMSKeyId"] = self.kms_key_id
            out.setdefault("ServerSideEncryption", "aws:kms")
        return out


class Bucket:
    """One bucket, one client. Methods raise S3Error / UsageError, never botocore's exceptions."""

    def __init__(self, app: App, bucket: str, settings: Settings | None = None,
                 credentials: Credentials | None = None) -> None:
        self.app = app
        self.name = bucket
        self.credentials = credentials or Credentials("AWS default chain")
        self.settings = settings or Settings.from_env(self.credentials.config)
        self._client: Any = None
        self._lock: tuple[bool, str] | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint or "AWS S3"

    def _connect(self) -> Any:
        import boto3
        from botocore.config import Config

        try:
            c = self.credentials
            session = boto3.session.Session(aws_access_key_id=c.key_id, aws_secret_access_key=c.secret_key,
                                            aws_session_token=c.token, region_name=self.settings.region)
            credentials = session.get_credentials()
        except Exception as exc:  # a malformed shared config file, an unknown AWS_PROFILE
            raise UsageError(f"S3 configuration: {self.app.redact(str(exc))}") from None
        if credentials is None:
            raise UsageError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                             "with a shared credentials file, or the s3_credentials_secret setting")
        frozen = credentials.get_frozen_credentials()
        self.app.redact.add(frozen.secret_key, frozen.token)
        config = Config(
            connect_timeout=self.app.timeout, read_timeout=max(60.0, self.app.timeout),
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": self.settings.addressing},
            # Parts carry Content-MD5, which every S3-compatible server checks; the SDK's own CRC32 trailers
            # (aws-chunked bodies) are not understood by all of them.
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            user_agent_extra="coderctl",
        )
        region = self.settings.region or ("us-east-1" if self.settings.endpoint else None)
        return session.client("s3", endpoint_url=self.settings.endpoint, region_name=region, config=config)

    # -- errors --------------------------------------------------------------------------------------------

    def error(self, exc: BaseException, what: str) -> CoderctlError:
        """One line for a failed request on this bucket."""
        from botocore import exceptions as bex

        where = f"s3://{self.name} at {self.endpoint}"
        if isinstance(exc, CoderctlError):
            return exc
        if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
            return UsageError(f"no usable S3 credentials for {where}: {exc}")
        if isinstance(exc, bex.ClientError):
            err = exc.response.get("Error") or {}
            code = str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
            message = str(err.get("Message") or "").strip()
            if code in _AUTH_CODES:
                return UsageError(f"{where} refused the credentials ({code}) while trying to {what}: "
                                  f"{self.credentials.hint()}")
            if code in _MISSING_BUCKET or (code in ("404", "NotFound") and what == "open the bucket"):
                return UsageError(f"bucket {self.name} does not exist at {self.endpoint}: create it, or fix the "
                                  "s3:// URL or AWS_ENDPOINT_URL")
            return S3Error(self.app.redact(f"{where}: could not {what}: {code}{': ' + message if message else ''}"))
        if isinstance(exc, bex.EndpointConnectionError | bex.ConnectTimeoutError | bex.ConnectionClosedError
                      | bex.ReadTimeoutError | bex.ProxyConnectionError | bex.ResponseStreamingError
                      | bex.HTTPClientError):
            reason = str(getattr(exc, "kwargs", {}).get("error") or exc).splitlines()[0]
            return S3Error(self.app.redact(f"cannot reach S3 endpoint {self.endpoint} (s3://{self.name}) while "
                                           f"trying to {what}: {reason}"))
        if isinstance(exc, bex.BotoCoreError | OSError):
            return S3Error(self.app.redact(f"{where}: could not {what}: {exc}"))
        raise exc

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(Bucket=self.name, **kwargs)
        except Exception as exc:
            raise self.error(exc, what) from None

    # -- requests ------------------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Credentials, bucket and endpoint in one request, before any work starts."""
        self._call("open the bucket", "head_bucket")

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            r = self.client.head_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if str((exc.response.get("Error") or {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self.error(exc, f"read {key}") from None
        except Exception as exc:
            raise self.error(exc, f"read {key}") from None
        until, mode = r.get("ObjectLockRetainUntilDate"), r.get("ObjectLockMode")
        retention = Retention(str(mode), until) if mode and isinstance(until, datetime) else None
        return ObjectInfo(key, int(r.get("ContentLength") or 0), r.get("LastModified"), str(r.get("ETag") or ""),
                          retention)

    def objects(self, prefix: str) -> list[ObjectInfo]:
        """The objects directly under `prefix` (not in its sub-"directories")."""
        out: list[ObjectInfo] = []
        token: dict[str, str] = {}
        while True:
            page = self._call(f"list {prefix or '/'}", "list_objects_v2", Prefix=prefix, Delimiter="/", **token)
            for o in page.get("Contents") or []:
                out.append(ObjectInfo(o["Key"], int(o.get("Size") or 0), o.get("LastModified"),
                                      str(o.get("ETag") or "")))
            if not page.get("IsTruncated"):
                return out
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def get_bytes(self, key: str, limit: int = 1 << 20) -> bytes:
        body = self._call(f"read {key}", "get_object", Key=key)["Body"]
        try:
            data: bytes = body.read(limit + 1)
        except Exception as exc:
            raise self.error(exc, f"read {key}") from None
        finally:
            body.close()
        if len(data) > limit:
            raise S3Error(f"s3://{self.name}/{key} is larger than {limit} bytes")
        return data

    def chunks(self, key: str, etag: str | None = None) -> Iterator[bytes]:
        """The object's bytes as they arrive; with `etag`, only that version of it (If-Match)."""
        extra = {"IfMatch": etag} if etag else {}
        body = self._call(f"read {key}", "get_object", Key=key, **extra)["Body"]
        try:
            yield from body.iter_chunks(READ_CHUNK)
        except Exception as exc:
            raise self.error(exc, f"read {key}") from None
        finally:
            body.close()

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json",
                  extra: Mapping[str, Any] | None = None) -> None:
        """One PutObject; `extra` adds arguments (an object lock). Content-MD5 is sent, as object lock requires."""
        import base64
        import hashlib

        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        self._call(f"write {key}", "put_object", Key=key, Body=data, ContentMD5=md5, ContentType=content_type,
                   **self.settings.encryption(), **(extra or {}))

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", "delete_object", Key=key)

    def pending_uploads(self, prefix: str) -> list[PendingUpload]:
        """Multipart uploads started under `prefix` and neither completed nor aborted."""
        out: list[PendingUpload] = []
        marker: dict[str, str] = {}
        while True:
            try:
                page = self._call("list incomplete multipart uploads", "list_multipart_uploads", Prefix=prefix,
                                  **marker)
            except S3Error as exc:
                if "NoSuchUpload" in str(exc):  # rclone's answer when there is none under the prefix
                    return out
                raise
            for u in page.get("Uploads") or []:
                out.append(PendingUpload(u["Key"], u["UploadId"], u.get("Initiated")))
            if not page.get("IsTruncated"):
                return out
            marker = {"KeyMarker": page.get("NextKeyMarker") or "",
                      "UploadIdMarker": page.get("NextUploadIdMarker") or ""}

    def lock_configuration(self) -> tuple[bool, str]:
        """Whether the bucket has object lock enabled, and if not, why (asked once per Bucket).

        A bucket created without object lock answers ObjectLockConfigurationNotFoundError; a server without
        object lock answers NotImplemented, or (rclone serve s3) an empty document."""
        from botocore.exceptions import ClientError

        if self._lock is None:
            try:
                r = self.client.get_object_lock_configuration(Bucket=self.name)
            except ClientError as exc:
                code = str((exc.response.get("Error") or {}).get("Code") or
                           exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
                if code in _NO_LOCK_CONFIGURATION:
                    self._lock = (False, "has no object lock configuration")
                elif code in _UNSUPPORTED:
                    self._lock = (False, f"is on a server that does not support object lock ({code})")
                else:
                    raise self.error(exc, "read the object lock configuration") from None
            except Exception as exc:
                raise self.error(exc, "read the object lock configuration") from None
            else:
                enabled = (r.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled")
                self._lock = (True, "") if enabled == "Enabled" else (False, "does not report object lock as enabled")
        return self._lock

    def set_retention(self, key: str, retention: Retention) -> None:
        """PutObjectRetention on the current version of `key`."""
        self._call(f"set the retention of {key}", "put_object_retention", Key=key,
                   Retention={"Mode": retention.mode, "RetainUntilDate": retention.until})

    def abort(self, key: str, upload_id: str) -> None:
        self._call(f"abort the multipart upload of {key}", "abort_multipart_upload", Key=key, UploadId=upload_id)


def open_bucket(app: App, url: S3URL) -> Bucket:
    """The bucket of `url`, its credentials resolved (ops/s3creds.py) and checked by one request."""
    bucket = Bucket(app, url.bucket, credentials=resolve(app))
    bucket.preflight()
    return bucket
