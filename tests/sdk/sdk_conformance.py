#!/usr/bin/env python3
"""Conformance of `jobwatch sim` with the official Huawei Cloud Python SDK.

Starts the simulator binary in AK/SK mode and drives it with
`huaweicloudsdkworkspaceapp` exactly as a user of the SDK would: signed
requests, paging, the count API, and the SDK's error mapping. If the SDK
can talk to the simulator, the simulator's signature check, query handling,
response shapes and error bodies match what the SDK was built against.

Usage: sdk_conformance.py [PATH_TO_JOBWATCH]   (default: target/debug/jobwatch)
Prints "N passed, 0 failed" as its last line; exits 1 on any failure.
"""

import datetime
import json
import os
import subprocess
import sys
import threading
import traceback
import urllib.request

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import (
    ClientRequestException,
    ServerResponseException,
)
from huaweicloudsdkworkspaceapp.v1 import (
    CountSubJobsRequest,
    ListSubJobsRequest,
    WorkspaceAppClient,
)

AK = "SIMCONFORMANCEAK0001"
SK = "sim-conformance-secret-key"
# Shaped like a real project id, to exercise the path parameter.
PROJECT = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
HISTORY = 25
# The API's ten job types plus the SDK's nine (docs/configuration.md).
JOB_TYPES_KNOWN = 19

try:
    import dateutil.parser  # noqa: F401  (the SDK's optional time parser)
    HAVE_DATEUTIL = True
except ImportError:
    HAVE_DATEUTIL = False

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def start_sim(binary):
    """Starts the simulator and returns (process, endpoint) once it listens."""
    proc = subprocess.Popen(
        [binary, "sim", "--listen", "127.0.0.1:0", "--history", str(HISTORY),
         "--projects", PROJECT, "--ak", AK, "--sk", SK, "--seed", "7"],
        stdout=subprocess.PIPE, text=True)
    first = {}

    def read_first_line():
        first["line"] = proc.stdout.readline()

    reader = threading.Thread(target=read_first_line, daemon=True)
    reader.start()
    reader.join(timeout=30)
    line = first.get("line", "")
    prefix = "listening on "
    if not line.startswith(prefix):
        proc.kill()
        raise SystemExit("simulator did not announce its address, got %r" % line)
    return proc, line[len(prefix):].strip()


def as_datetime(value):
    return value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)


def client(endpoint, sk=SK):
    return (WorkspaceAppClient.new_builder()
            .with_credentials(BasicCredentials(AK, sk, PROJECT))
            .with_endpoints([endpoint])
            .build())


def control(endpoint, method, path, body=None):
    """Calls the simulator's unauthenticated /sim/ control surface."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(endpoint + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
        return json.loads(text) if text else None


def expect_error(call, exc_type, status, code, msg=None):
    try:
        call()
    except exc_type as e:
        assert e.status_code == status, "status %s, want %s" % (e.status_code, status)
        assert e.error_code == code, "error_code %r, want %r" % (e.error_code, code)
        if msg is not None:
            assert e.error_msg == msg, "error_msg %r, want %r" % (e.error_msg, msg)
        assert e.request_id, "the SDK read no X-Request-Id"
        return e
    raise AssertionError("no %s raised" % exc_type.__name__)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "jobwatch")
    proc, endpoint = start_sim(binary)
    sdk = client(endpoint)
    tests = []

    def test(fn):
        tests.append(fn)
        return fn

    @test
    def list_pages_deliver_every_item():
        seen = []
        offset = 0
        while True:
            resp = sdk.list_sub_jobs(ListSubJobsRequest(
                job_type="CREATE_SERVER", offset=offset, limit=10))
            assert resp.count == HISTORY, resp.count
            seen.extend(resp.items)
            offset += len(resp.items)
            if not resp.items or offset >= resp.count:
                break
        ids = [i.id for i in seen]
        assert len(ids) == HISTORY and len(set(ids)) == HISTORY, ids
        for item in seen:
            assert item.project_id == PROJECT
            # With python-dateutil (run.sh installs it) the SDK parses the
            # API's time format into datetimes; without, it keeps the text.
            for value in (item.begin_time, item.end_time):
                if HAVE_DATEUTIL:
                    assert isinstance(value, datetime.datetime), (type(value), value)
                else:
                    datetime.datetime.fromisoformat(value)
            assert item.job_resource_info.resource_name.startswith("APS-")
        begins = [as_datetime(i.begin_time) for i in seen]
        assert begins == sorted(begins, reverse=True), "not newest first"

    @test
    def list_with_limit_100_and_status_filter():
        resp = sdk.list_sub_jobs(ListSubJobsRequest(job_type="DELETE_SERVER", limit=100))
        assert resp.count == HISTORY and len(resp.items) == HISTORY
        ids = {i.id for i in resp.items}
        assert len(ids) == HISTORY
        total = 0
        for status in ("SUCCESS", "FAILED", "ABNORMAL"):
            only = sdk.list_sub_jobs(ListSubJobsRequest(
                job_type="DELETE_SERVER", status=status, limit=100))
            assert only.count == len(only.items), (only.count, len(only.items))
            assert {i.id for i in only.items} <= ids
            total += only.count
        # History is terminal: the three terminal statuses partition it.
        assert total == HISTORY, total

    @test
    def list_by_job_id():
        first = sdk.list_sub_jobs(ListSubJobsRequest(job_type="CREATE_SERVER", limit=1)).items[0]
        resp = sdk.list_sub_jobs(ListSubJobsRequest(
            job_type="CREATE_SERVER", job_id=first.job_id, limit=100))
        assert resp.count >= 1 and all(i.job_id == first.job_id for i in resp.items)

    @test
    def count_api():
        one = sdk.count_sub_jobs(CountSubJobsRequest(job_type="CREATE_SERVER"))
        assert one.count == HISTORY, one.count
        # The SDK documents a comma-separated list for the count request.
        two = sdk.count_sub_jobs(CountSubJobsRequest(job_type="CREATE_SERVER,DELETE_SERVER"))
        assert two.count == 2 * HISTORY, two.count
        every = sdk.count_sub_jobs(CountSubJobsRequest())
        assert every.count == JOB_TYPES_KNOWN * HISTORY, every.count

    @test
    def limit_101_is_the_sims_400():
        # The SDK does no client-side validation: the request reaches the sim.
        expect_error(
            lambda: sdk.list_sub_jobs(ListSubJobsRequest(job_type="CREATE_SERVER", limit=101)),
            ClientRequestException, 400, "WKS.00010002",
            "Invalid parameter limit: '101', must be an integer from 1 to 100.")

    @test
    def unknown_job_type_is_400():
        expect_error(
            lambda: sdk.list_sub_jobs(ListSubJobsRequest(job_type="RESIZE SERVER")),
            ClientRequestException, 400, "WKS.00010002",
            "Invalid parameter job_type: 'RESIZE SERVER', not a supported job type.")

    @test
    def unknown_project_is_404():
        other = (WorkspaceAppClient.new_builder()
                 .with_credentials(BasicCredentials(AK, SK, "no-such-project"))
                 .with_endpoints([endpoint]).build())
        expect_error(
            lambda: other.list_sub_jobs(ListSubJobsRequest(job_type="CREATE_SERVER")),
            ClientRequestException, 404, "WKS.00010404")

    @test
    def wrong_sk_is_401():
        bad = client(endpoint, sk="not-the-secret")
        expect_error(
            lambda: bad.list_sub_jobs(ListSubJobsRequest(job_type="CREATE_SERVER")),
            ClientRequestException, 401, "APIG.0301",
            "Incorrect IAM authentication information: verify aksk signature fail")

    @test
    def injected_503_is_a_server_response_exception():
        control(endpoint, "POST", "/sim/faults", {"fault": "status", "status": 503})
        expect_error(
            lambda: sdk.list_sub_jobs(ListSubJobsRequest(job_type="CREATE_SERVER")),
            ServerResponseException, 503, "WKS.00129901",
            "The service is now unavailable to process the request.")

    @test
    def the_sim_saw_every_sdk_request():
        stats = control(endpoint, "GET", "/sim/stats")
        assert stats["by_status"].get("401") == 1, stats
        assert stats["by_path"]["/v1/{project_id}/app-server-sub-jobs/actions/count"] == 3, stats

    passed = failed = 0
    try:
        for fn in tests:
            try:
                fn()
                passed += 1
                print("ok   %s" % fn.__name__)
            except Exception:
                failed += 1
                print("FAIL %s" % fn.__name__)
                traceback.print_exc()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
