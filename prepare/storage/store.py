"""A bucket as prepare and train use it: URLs, credentials from the standard places, and the few object
operations a dataset needs (list, read, download, upload, conditional write, delete), every failure a user can
cause as one line naming the URL and the operation.

obstore (Rust's object_store) moves the bytes for s3:// and gs:// alike, with multipart uploads, concurrent
requests and conditional writes; AWS credentials are resolved by boto3's chain (environment, profiles, SSO,
instance and container roles), exactly as the AWS CLI resolves them, Google's by object_store (service account,
application default credentials, the metadata server). Nothing here prints or stores a credential.

URLs: `s3://BUCKET/PREFIX` (an S3-compatible endpoint from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, as every
AWS SDK reads them), `s3+http://HOST:PORT/BUCKET/PREFIX` or `s3+https://...` (an endpoint such as MinIO or R2
by URL), `gs://BUCKET/PREFIX`.
"""

import dataclasses
import datetime
import os
import re
import urllib.parse

SCHEMES = ("s3", "s3+http", "s3+https", "gs")
URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
CHUNK = 8 << 20  # bytes a download streams at a time
PART = 16 << 20  # a multipart upload's part
MAX_RETRIES = 5  # requests the client retries itself (5xx, dropped connections, timeouts), with backoff


class StorageError(Exception):
    """A bucket problem the user can fix, in one line naming the URL and what was being done."""


class Conflict(Exception):
    """A conditional write lost: the object exists, or changed since it was read."""


def is_url(text):
    return bool(URL.match(str(text)))


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a dataset or a source lives in object storage: scheme, bucket, key prefix (no slashes at either
    end), and for an endpoint given by URL its scheme://host[:port]."""

    scheme: str
    bucket: str
    prefix: str = ""
    endpoint: str | None = None

    def url(self, key=""):
        """The URL of `key` below this location, as the user would write it (never with credentials)."""
        path = "/".join(p for p in (self.prefix, key) if p)
        if self.endpoint:
            return f"s3+{self.endpoint}/{self.bucket}/{path}".rstrip("/")
        return f"{self.scheme}://{self.bucket}/{path}".rstrip("/")

    def key(self, name=""):
        """The full object key of `name` below this location."""
        return "/".join(p for p in (self.prefix, name) if p)

    def child(self, name):
        return dataclasses.replace(self, prefix=self.key(name.strip("/")))


def parse(url):
    """The Location a URL names; one line for an unknown scheme, credentials in the URL or a missing bucket."""
    match = URL.match(url)
    if not match or match[1].lower() not in SCHEMES:
        scheme = match[1] if match else url
        raise StorageError(f"{url}: unknown scheme {scheme!r}; object storage is s3://, s3+http(s)://HOST/ (an "
                           f"S3-compatible endpoint) or gs://")
    scheme = match[1].lower()
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        raise StorageError(f"{parts.scheme}://...@{parts.hostname}: credentials do not belong in a URL; put them in "
                           f"the environment or a profile")
    if scheme in ("s3+http", "s3+https"):
        bucket, _, prefix = parts.path.lstrip("/").partition("/")
        endpoint = f"{scheme[3:]}://{parts.netloc}"
        if not parts.hostname:
            raise StorageError(f"{url}: no host in an endpoint URL (s3+http://HOST:PORT/BUCKET/PREFIX)")
        return Location("s3", check_bucket(bucket, url), prefix.strip("/"), endpoint)
    return Location(scheme, check_bucket(parts.netloc, url), parts.path.strip("/"))


def check_bucket(bucket, url):
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", bucket):
        raise StorageError(f"{url}: {bucket!r} is not a bucket name (3 to 63 lowercase letters, digits, dots, dashes)")
    return bucket


@dataclasses.dataclass(frozen=True)
class Object:
    """What the store reports of an object: its key (relative to the Bucket's location), size, ETag, version
    (None where the bucket keeps none) and the time the store wrote it (the store's clock)."""

    key: str
    size: int
    etag: str | None
    version: str | None
    modified: datetime.datetime


def client():
    """obstore, or one line saying which extra brings it."""
    try:
        import obstore
    except ImportError:
        raise StorageError("object storage needs obstore: pip install 'gptmill[s3]' (or '[gcs]')") from None
    return obstore


def aws_credentials():
    """boto3's credential provider (the AWS CLI's chain), or None when AWS_SKIP_SIGNATURE asks for none."""
    if os.environ.get("AWS_SKIP_SIGNATURE", "").lower() in ("1", "true"):
        return None
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        raise StorageError("s3:// needs boto3 to find credentials: pip install 'gptmill[s3]'") from None
    session = boto3.Session()
    if session.get_credentials() is None:
        raise StorageError("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                           "or run where an instance or container role provides them")
    return Boto3CredentialProvider(session)


def open_store(location):
    """An obstore store rooted at the location's bucket (keys are full keys)."""
    obstore = client()
    from obstore.store import GCSStore, S3Store

    retry = {"max_retries": MAX_RETRIES, "retry_timeout": datetime.timedelta(seconds=60)}
    if location.scheme == "gs":
        return GCSStore(location.bucket, retry_config=retry)
    endpoint = location.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    provider = aws_credentials()
    config = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
              or getattr(provider, "config", {}).get("region") or "us-east-1"}
    if endpoint:
        config["endpoint"] = endpoint
    if provider is None:
        config["skip_signature"] = True
    options = {"allow_http": bool(endpoint and endpoint.startswith("http://")),
               "timeout": datetime.timedelta(minutes=5)}
    del obstore
    return S3Store(location.bucket, config=config, client_options=options, retry_config=retry,
                   credential_provider=provider)


S3_ACTIONS = {"list": "s3:ListBucket", "read": "s3:GetObject", "write": "s3:PutObject", "delete": "s3:DeleteObject"}


def explain(error, location, operation, key):
    """A StorageError of one line for an obstore failure of `operation` (list, read, write, delete) on `key`."""
    url = location.url(key)
    text = str(error)
    code = re.search(r"<Code>(\w+)</Code>|code: \"(\w+)\"", text)
    code = code and (code[1] or code[2])
    kind = type(error).__name__
    if code == "NoSuchBucket" or "bucket does not exist" in text.lower():
        return StorageError(f"{location.scheme}://{location.bucket}: no such bucket")
    if kind == "PermissionDeniedError" or code in ("AccessDenied", "Forbidden", "AllAccessDisabled"):
        action = S3_ACTIONS[operation] if location.scheme == "s3" else f"storage.objects.{operation}"
        return StorageError(f"{url}: permission denied to {operation} ({action}) with these credentials")
    if kind == "UnauthenticatedError" or code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                                                  "InvalidToken"):
        return StorageError(f"{url}: the store refused these credentials ({code or 'unauthenticated'})")
    if "error sending request" in text or "connect" in text.lower():
        return StorageError(f"{url}: cannot reach the store to {operation} ({first_line(text)})")
    return StorageError(f"{url}: cannot {operation}: {first_line(text)}")


def first_line(text):
    return text.strip().splitlines()[0][:300] if text.strip() else "no detail"


class Bucket:
    """A dataset's (or a source's) location in object storage and the operations on keys below it."""

    def __init__(self, location):
        self.location = location if isinstance(location, Location) else parse(location)
        self.store = open_store(self.location)
        self.obstore = client()

    def url(self, key=""):
        return self.location.url(key)

    def calling(self, operation, key, call, *args, **kwargs):
        """`call(*args)`, its failures as StorageError (or Conflict, or FileNotFoundError for a missing object)."""
        try:
            return call(*args, **kwargs)
        except Conflict:
            raise
        except FileNotFoundError as e:
            if "NoSuchBucket" in str(e):
                raise explain(e, self.location, operation, key) from None
            raise FileNotFoundError(self.url(key)) from None
        except Exception as e:
            name = type(e).__name__
            if name in ("AlreadyExistsError", "PreconditionError"):
                raise Conflict(self.url(key)) from None
            if not isinstance(e, self.obstore.exceptions.BaseError) and not isinstance(e, (OSError, ValueError)):
                raise
            raise explain(e, self.location, operation, key) from None

    def describe(self, meta):
        full = meta["path"]
        key = full[len(self.location.prefix) + 1:] if self.location.prefix else full
        return Object(key, meta["size"], meta.get("e_tag"), meta.get("version"), meta["last_modified"])

    def list(self, under=""):
        """Every object below `under` (recursively), sorted by key. A bucket that does not exist is an error."""
        prefix = self.location.key(under.strip("/"))
        listing = lambda: list(self.obstore.list(self.store, prefix + "/" if prefix else None))  # noqa: E731
        chunks = self.calling("list", under, listing)
        return sorted((self.describe(m) for chunk in chunks for m in chunk), key=lambda o: o.key)

    def head(self, key):
        """The Object at `key`, or None."""
        try:
            return self.describe(self.calling("read", key, self.obstore.head, self.store, self.location.key(key)))
        except FileNotFoundError:
            return self.missing_bucket_or_none(key)

    def missing_bucket_or_none(self, key):
        """None for a missing object; a StorageError if the whole bucket is missing (a HEAD has no body to say
        which, a GET's error does)."""
        try:
            self.calling("read", key, self.obstore.get, self.store, self.location.key(key))
        except FileNotFoundError:
            pass
        return None

    def read(self, key):
        """(The bytes of `key`, its Object), or (None, None) when there is none."""
        try:
            result = self.calling("read", key, self.obstore.get, self.store, self.location.key(key))
            data = self.calling("read", key, result.bytes)
        except FileNotFoundError:  # a GET's error names a missing bucket itself
            return None, None
        return bytes(data), self.describe(result.meta)

    def stream(self, key, offset=0, etag=None):
        """The bytes of `key` from `offset` on, as chunks (a dropped connection raises StorageError mid-way);
        with `etag`, only while the object has it (else Conflict)."""
        options = {"range": {"offset": offset}} if offset else {}
        if etag:
            options["if_match"] = etag
        result = self.calling("read", key, self.obstore.get, self.store, self.location.key(key),
                              options=options or None)
        chunks = iter(result.stream(min_chunk_size=CHUNK))
        while True:
            try:
                chunk = self.calling("read", key, next, chunks)
            except StopIteration:
                return
            yield chunk

    def write(self, key, data, mode="overwrite"):
        """Write bytes at `key` in one request. `mode`: "overwrite", "create" (Conflict if it exists) or an
        ETag it must still have (Conflict otherwise). Returns the new Object's ETag."""
        if mode not in ("overwrite", "create"):
            mode = {"e_tag": mode}
        result = self.calling("write", key, self.obstore.put, self.store, self.location.key(key), data, mode=mode,
                              use_multipart=False)
        return result["e_tag"]

    def upload(self, key, path, concurrency=8):
        """Upload a local file (in parts when large): the object appears whole or not at all."""
        import pathlib

        self.calling("write", key, self.obstore.put, self.store, self.location.key(key), pathlib.Path(path),
                     chunk_size=PART, max_concurrency=concurrency)

    def delete(self, keys):
        """Delete objects (missing ones are no error), in batches."""
        keys = list(keys)
        for at in range(0, len(keys), 1000):
            batch = [self.location.key(k) for k in keys[at : at + 1000]]
            self.calling("delete", keys[at], self.obstore.delete, self.store, batch)
