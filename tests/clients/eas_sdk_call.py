"""Call the bridge with Alibaba's official `eas-prediction` SDK, exactly as its docs show, and print the result.

Run in its own process (the SDK's generated protobuf modules are old: with a current protobuf it imports
only under PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, which must not leak into the test process).

    python tests/clients/eas_sdk_call.py ENDPOINT SERVICE TOKEN BODY_FILE
prints {"status": 200, "body": "..."} or {"status": <PredictException code>, "body": "..."}.
"""

from __future__ import annotations

import json
import sys

from eas_prediction import PredictClient, StringRequest
from eas_prediction.exception import PredictException


def main(endpoint: str, service: str, token: str, body_file: str) -> None:
    client = PredictClient(endpoint, service)
    client.set_token(token)
    client.set_timeout(120_000)
    client.set_retry_count(1)
    client.init()
    with open(body_file, encoding="utf-8") as body:
        request = StringRequest(body.read())
    try:
        response = client.predict(request)
    except PredictException as exc:
        print(json.dumps({"status": exc.code, "body": str(exc.message)}))
        return
    data = response.response_data
    print(json.dumps({"status": 200, "body": data.decode("utf-8") if isinstance(data, bytes) else str(data)}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
