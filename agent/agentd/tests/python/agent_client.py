"""A second implementation of an agent.AgentService client for the wire
tests: grpcio's channel and stubs, over the code grpc_tools.protoc
generates from agent/proto/proto/agent/agent.proto.

    agent_client.py GENERATED_DIR TARGET [AUTHORITY]

TARGET is a gRPC target such as unix:/path/agent.sock or 127.0.0.1:7002
(plaintext). AUTHORITY, when given, is the channel's
grpc.default_authority: for a unix: target gRPC core (since 1.57) sends
the percent-encoded socket path as :authority, which the agent's HTTP/2
layer refuses, so a client of the socket sets "localhost" as grpc-go
does. The client reads one JSON command per line on stdin and
answers each with one JSON line on stdout, on one channel for all calls:

    {"rpc": "Algo", "metadata": [[k, v], ...], "algorithm": FILE,
     "requirements": FILE or null, "chunk": N}
        every requirements chunk first, then the algorithm's, as the Go
        CLI sends them
    {"rpc": "Data", "metadata": [...], "dataset": FILE, "filename": NAME,
     "chunk": N}
        the filename in every message
    {"rpc": "Result", "metadata": [...]}
        reassembles the chunks; checks the file-size header that the Go
        CLI requires; reads the bytes with zipfile when they are a zip
    {"rpc": "Health", "service": NAME}
        grpc.health.v1.Health/Check with the request encoded by hand

Every answer has the status as grpcio saw it: "code" (the StatusCode's
name), "details", and the metadata of the response.
"""

import hashlib
import io
import json
import sys
import zipfile

generated, target = sys.argv[1:3]
authority = sys.argv[3] if len(sys.argv) > 3 else None
sys.path.insert(0, generated)

import grpc  # noqa: E402
from agent import agent_pb2, agent_pb2_grpc  # noqa: E402

TIMEOUT = 120


def chunks(path, size):
    with open(path, "rb") as f:
        data = f.read()
    return [data[i : i + size] for i in range(0, len(data), size)]


def metadata(cmd):
    return [(k, v) for k, v in cmd.get("metadata", [])]


def pairs(md):
    return [[k, v if isinstance(v, str) else v.hex()] for k, v in (md or ())]


def finished(call):
    return {
        "code": call.code().name,
        "details": call.details(),
        "initial_metadata": pairs(call.initial_metadata()),
        "trailing_metadata": pairs(call.trailing_metadata()),
    }


def algo(stub, cmd):
    sent = []

    def messages():
        if cmd.get("requirements"):
            for c in chunks(cmd["requirements"], cmd["chunk"]):
                sent.append(["requirements", len(c)])
                yield agent_pb2.AlgoRequest(requirements=c)
        for c in chunks(cmd["algorithm"], cmd["chunk"]):
            sent.append(["algorithm", len(c)])
            yield agent_pb2.AlgoRequest(algorithm=c)

    try:
        response, call = stub.Algo.with_call(
            messages(), metadata=metadata(cmd), timeout=TIMEOUT
        )
        out = finished(call)
        out["response"] = response.SerializeToString().hex()
    except grpc.RpcError as e:
        out = finished(e)
    out["sent"] = sent
    return out


def data(stub, cmd):
    sent = []

    def messages():
        for c in chunks(cmd["dataset"], cmd["chunk"]):
            sent.append(["dataset", len(c)])
            yield agent_pb2.DataRequest(dataset=c, filename=cmd["filename"])

    try:
        response, call = stub.Data.with_call(
            messages(), metadata=metadata(cmd), timeout=TIMEOUT
        )
        out = finished(call)
        out["response"] = response.SerializeToString().hex()
    except grpc.RpcError as e:
        out = finished(e)
    out["sent"] = sent
    return out


def result(stub, cmd):
    call = stub.Result(
        agent_pb2.ResultRequest(), metadata=metadata(cmd), timeout=TIMEOUT
    )
    received, sizes = bytearray(), []
    try:
        for m in call:
            sizes.append(len(m.file))
            received += m.file
    except grpc.RpcError:
        pass
    out = finished(call)
    out["chunks"] = sizes
    out["length"] = len(received)
    out["sha3"] = hashlib.sha3_256(received).hexdigest()
    # What the Go CLI requires before the first chunk: one decimal
    # file-size header, equal to what then arrives.
    sizes_seen = [v for k, v in call.initial_metadata() or () if k == "file-size"]
    out["file_size"] = sizes_seen
    out["file_size_ok"] = (
        len(sizes_seen) == 1
        and sizes_seen[0].isdigit()
        and int(sizes_seen[0]) == len(received)
    )
    if zipfile.is_zipfile(io.BytesIO(received)):
        with zipfile.ZipFile(io.BytesIO(received)) as z:
            out["zip_bad_entry"] = z.testzip()
            out["zip"] = sorted(
                [i.filename, hashlib.sha3_256(z.read(i)).hexdigest()]
                for i in z.infolist()
            )
    return out


def health(channel, cmd):
    # grpc.health.v1.HealthCheckRequest{service = 1: string}: tag 0x0a,
    # then the length (a name under 128 bytes fits in one varint byte).
    name = cmd["service"].encode()
    request = b"\x0a" + bytes([len(name)]) + name
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        response, call = check.with_call(request, timeout=TIMEOUT)
        out = finished(call)
        out["response"] = response.hex()
    except grpc.RpcError as e:
        out = finished(e)
    return out


def main():
    options = [("grpc.default_authority", authority)] if authority else []
    channel = grpc.insecure_channel(target, options=options)
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    calls = {"Algo": algo, "Data": data, "Result": result}
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd["rpc"] == "Health":
            out = health(channel, cmd)
        else:
            out = calls[cmd["rpc"]](stub, cmd)
        out["rpc"] = cmd["rpc"]
        print(json.dumps(out), flush=True)
    channel.close()


main()
