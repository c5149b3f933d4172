"""A real S3 server for the tests: moto's server mode in a subprocess on a free localhost port, one per test
session, with IAM enforced after its first requests so that a user without write permission gets a real 403.
A test gets a bucket of its own and the environment that points every client (obstore, boto3, a subprocess)
at the server; a FaultyProxy in front of it drops or corrupts a response on demand."""

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

SETUP_REQUESTS = 3  # IAM requests the server takes without credentials: creating the admin user and its key


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iam_user(iam, name, actions):
    """An IAM user allowed `actions`, and its (key id, secret)."""
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


class S3Server:
    def __init__(self):
        import boto3

        self.port = free_port()
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        while True:  # until it answers (or dies)
            if self.process.poll() is not None:
                raise RuntimeError("moto's server did not start")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                threading.Event().wait(0.05)
        anonymous = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="setup",
                                 aws_secret_access_key="setup")
        self.admin = iam_user(anonymous, "admin", ["s3:*", "iam:*"])
        self.reader = iam_user(self.client("iam"), "reader", ["s3:GetObject", "s3:ListBucket"])

    def client(self, service="s3", keys=None):
        import boto3

        keys = keys or self.admin
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=keys[0],
                            aws_secret_access_key=keys[1])

    def env(self, keys=None, endpoint=None):
        """What points a client at this server with `keys` (the admin's by default), and at nothing else: no
        profile files, no instance metadata."""
        keys = keys or self.admin
        return {"AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1], "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": endpoint or self.endpoint, "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    def new_bucket(self):
        name = f"test-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self):
        self.process.terminate()
        self.process.wait()


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A fresh bucket's URL (s3://NAME) with the environment pointing at the session's server."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SKIP_SIGNATURE", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.new_bucket()}"


class FaultyProxy:
    """A TCP proxy to the server that, when armed, cuts (`"drop"`) or flips a byte of (`"corrupt"`) the body of
    the next response larger than `min_bytes`, or holds a request (hold): real faults and pauses between a real
    client and server."""

    def __init__(self, port, min_bytes=1 << 16):
        self.target, self.min_bytes, self.fault, self.faults, self.armings = port, min_bytes, None, 0, 0
        self.pattern, self.requests = None, []  # the first line of every request seen
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def arm(self, fault):
        self.fault = fault
        self.armings += 1

    def hold(self, pattern):
        """Hold the next request whose bytes contain `pattern` until release(); `self.holding` is set once it
        is held."""
        self.pattern, self.holding, self.released = pattern, threading.Event(), threading.Event()

    def release(self):
        self.pattern = None
        self.released.set()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self.pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(upstream, client, True), daemon=True).start()

    def pipe(self, source, sink, responses):
        sent, seen = 0, self.armings
        try:
            while data := source.recv(1 << 16):
                if seen != self.armings:  # bytes are counted from the arming on
                    sent, seen = 0, self.armings
                sent += len(data)
                if not responses and data.split(b" ", 1)[0] in (b"GET", b"PUT", b"POST", b"HEAD", b"DELETE"):
                    self.requests.append(data.split(b"\r\n", 1)[0].decode())
                if not responses and self.pattern and self.pattern in data:
                    self.holding.set()
                    self.released.wait()
                if responses and self.fault and sent > self.min_bytes:
                    fault, self.fault = self.fault, None
                    self.faults += 1
                    if fault == "drop":
                        break
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self.listener.close()
