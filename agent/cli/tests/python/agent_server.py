"""A second implementation of agent.AgentService for the wire tests:
grpcio's server, over the code grpc_tools.protoc generates from
agent/proto/proto/agent/agent.proto.

    agent_server.py GENERATED_DIR REPORT_DIR RESULT_FILE [CERT KEY]

Prints the port it listens on (127.0.0.1, TLS when CERT and KEY are
given), then serves until its stdin closes. Every call writes
REPORT_DIR/<n>-<rpc>.json: the metadata as received (in order), what each
message carried, and the SHA3-256 (hashlib) of what was concatenated.
Result streams RESULT_FILE in 1 MiB chunks after a file-size header.
"""

import hashlib
import itertools
import json
import os
import sys
import threading
from concurrent import futures

generated, report_dir, result_file = sys.argv[1:4]
tls = sys.argv[4:6]
sys.path.insert(0, generated)

import grpc  # noqa: E402
from agent import agent_pb2, agent_pb2_grpc  # noqa: E402

MIB = 1 << 20
counter = itertools.count(1)
lock = threading.Lock()


def record(rpc, context, **fields):
    report = {
        "rpc": rpc,
        "metadata": [[k, v] for k, v in context.invocation_metadata()],
        **fields,
    }
    with lock:
        n = next(counter)
    path = os.path.join(report_dir, f"{n:03}-{rpc}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.rename(path + ".tmp", path)


class Agent(agent_pb2_grpc.AgentServiceServicer):
    def Algo(self, request_iterator, context):
        algorithm, requirements, messages = bytearray(), bytearray(), []
        for m in request_iterator:
            if m.requirements:
                messages.append(["requirements", len(m.requirements)])
            if m.algorithm:
                messages.append(["algorithm", len(m.algorithm)])
            algorithm += m.algorithm
            requirements += m.requirements
        record(
            "Algo",
            context,
            messages=messages,
            algorithm_sha3=hashlib.sha3_256(algorithm).hexdigest(),
            requirements_sha3=hashlib.sha3_256(requirements).hexdigest(),
            algorithm_len=len(algorithm),
        )
        return agent_pb2.AlgoResponse()

    def Data(self, request_iterator, context):
        dataset, filenames, messages = bytearray(), [], []
        for m in request_iterator:
            messages.append(["dataset", len(m.dataset)])
            filenames.append(m.filename)
            dataset += m.dataset
        record(
            "Data",
            context,
            messages=messages,
            filenames=filenames,
            dataset_sha3=hashlib.sha3_256(dataset).hexdigest(),
        )
        return agent_pb2.DataResponse()

    def Result(self, request, context):
        with open(result_file, "rb") as f:
            data = f.read()
        record("Result", context)
        context.send_initial_metadata((("file-size", str(len(data))),))
        for i in range(0, len(data), MIB):
            yield agent_pb2.ResultResponse(file=data[i : i + MIB])


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(Agent(), server)
    if tls:
        with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


main()
