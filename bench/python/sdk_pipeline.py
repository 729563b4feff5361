"""Microsoft's Python SDKs archiving one recording chunk, as their docs show it.

The benchmark's Python row: `CallAutomationClient.download_recording(url)` (the Call
Automation quickstart reads the answer with `.read()`) into `BlobClient.upload_blob(...)`,
both on the SDK defaults. Run by archiver-bench as its own process, so its CPU time and peak
RSS are measured like the handler's:

    python sdk_pipeline.py '<json settings>'

prints `ready` once the clients exist, waits for `go` on stdin, archives, prints `done`, and
then waits for stdin to close (so the benchmark can read /proc before the process exits).

Settings: `acs_connection_string` (endpoint=https://<resource host>/;accesskey=...),
`recording_url` (an https URL on a recording host the SDK accepts), `route` (`host:port` of the
proxy that stands for that recording host), `blob_connection_string`, `blob_api_version`,
`container`, `blob`.

The one thing not as in production: the SDK accepts recording URLs only on ACS's own hosts
over https (`recording_url_validator.py`), so the URL names such a host and the client's
transport (azure-core's `RequestsTransport`, passed with the documented `transport=` keyword)
sends requests for it over plain http to `route`. And the Blob client is given the Storage
REST version the handler speaks (`api_version=`, a documented keyword), because Azurite refuses
versions newer than it knows. Nothing in the SDKs is patched; signing, headers, block sizes and
concurrency are the SDKs' own.
"""

import json
import sys
from urllib.parse import urlsplit, urlunsplit

import requests
from azure.communication.callautomation import CallAutomationClient
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobClient


class RouteAdapter(requests.adapters.HTTPAdapter):
    """Sends https://<host>/... to http://<route>/...: stands in for DNS and TLS."""

    def __init__(self, host, route):
        super().__init__()
        self.host = host
        self.route = route

    def send(self, request, **kwargs):
        url = urlsplit(request.url)
        if url.hostname == self.host:
            request.url = urlunsplit(("http", self.route, url.path, url.query, ""))
        return super().send(request, **kwargs)


def main():
    settings = json.loads(sys.argv[1])
    recording_url = settings["recording_url"]
    session = requests.Session()
    session.mount("https://", RouteAdapter(urlsplit(recording_url).hostname, settings["route"]))
    acs = CallAutomationClient.from_connection_string(
        settings["acs_connection_string"], transport=RequestsTransport(session=session)
    )
    blob = BlobClient.from_connection_string(
        settings["blob_connection_string"],
        settings["container"],
        settings["blob"],
        api_version=settings["blob_api_version"],
    )
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1

    recording = acs.download_recording(recording_url)
    blob.upload_blob(recording.read(), overwrite=True)

    print("done", flush=True)
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
