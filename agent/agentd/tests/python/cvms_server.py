"""A second implementation of the computation management service
(cvms.Service, which the agent dials) for the wire tests: grpcio's server,
over the code grpc_tools.protoc generates from
agent/proto/proto/cvms/cvms.proto.

    cvms_server.py GENERATED_DIR

Prints the port it listens on (127.0.0.1, plaintext), then reads one JSON
command per line on stdin and answers each with one JSON line on stdout:

    {"cmd": "session"}
        waits for the agent's Process stream: its job-id metadata
    {"cmd": "manifest", "file": F, "as": "runReq" | "chunks", "chunk": N}
        decodes F (a serialised ComputationRunReq) with the generated
        code, sends it again as a runReq message or as runReqChunks of N
        bytes of its Python encoding and an empty last one; answers with
        what Python decoded and the agent's run_res
    {"cmd": "state", "id": ID}
        sends agentStateReq and answers with the agentStateRes of that id
    {"cmd": "stop", "computation_id": ID}
        sends stopComputation and answers with the stopComputationRes

Answers carry the agent's messages as json_format renders them with the
proto field names, and "skipped": the kinds of other messages that came
first. The server stops when stdin closes.
"""

import json
import os
import queue
import sys
import threading
from concurrent import futures

generated = sys.argv[1]
sys.path.insert(0, generated)

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from cvms import cvms_pb2, cvms_pb2_grpc  # noqa: E402

WAIT = 30
sessions = queue.Queue()


class Session:
    def __init__(self, job_id):
        self.job_id = job_id
        self.inbound = queue.Queue()
        self.outbound = queue.Queue()

    def read(self, request_iterator):
        try:
            for m in request_iterator:
                self.inbound.put(m)
        except grpc.RpcError as e:
            self.inbound.put(e)
        self.inbound.put(None)

    def expect(self, kind, match=lambda m: True):
        """The next agent message of this kind that matches, and the kinds
        of the others that came before it."""
        skipped = []
        while True:
            m = self.inbound.get(timeout=WAIT)
            if m is None or isinstance(m, grpc.RpcError):
                raise RuntimeError(f"the agent's stream ended: {m}")
            which = m.WhichOneof("message")
            if which == kind and match(getattr(m, kind)):
                return getattr(m, kind), skipped
            skipped.append(which)


class Cvms(cvms_pb2_grpc.ServiceServicer):
    def Process(self, request_iterator, context):
        job_id = [v for k, v in context.invocation_metadata() if k == "job-id"]
        s = Session(job_id)
        context.add_callback(lambda: s.outbound.put(None))
        threading.Thread(target=s.read, args=(request_iterator,), daemon=True).start()
        sessions.put(s)
        while True:
            m = s.outbound.get()
            if m is None:
                return
            yield m


def render(message):
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def manifest(s, cmd):
    with open(cmd["file"], "rb") as f:
        req = cvms_pb2.ComputationRunReq.FromString(f.read())
    decoded = {
        "id": req.id,
        "datasets": [d.filename for d in req.datasets],
        "algo_type": req.algorithm.algo_type,
        "consumers": len(req.result_consumers),
    }
    if cmd["as"] == "runReq":
        s.outbound.put(cvms_pb2.ServerStreamMessage(runReq=req))
        pieces = 0
    else:
        data, n = req.SerializeToString(), cmd["chunk"]
        pieces = 0
        for i in range(0, len(data), n):
            s.outbound.put(
                cvms_pb2.ServerStreamMessage(
                    runReqChunks=cvms_pb2.RunReqChunks(
                        data=data[i : i + n], id=req.id, is_last=False
                    )
                )
            )
            pieces += 1
        s.outbound.put(
            cvms_pb2.ServerStreamMessage(
                runReqChunks=cvms_pb2.RunReqChunks(id=req.id, is_last=True)
            )
        )
    res, skipped = s.expect("run_res", lambda r: r.computation_id == req.id)
    return {"decoded": decoded, "pieces": pieces, "run_res": render(res), "skipped": skipped}


def state(s, cmd):
    s.outbound.put(
        cvms_pb2.ServerStreamMessage(agentStateReq=cvms_pb2.AgentStateReq(id=cmd["id"]))
    )
    res, skipped = s.expect("agentStateRes", lambda r: r.id == cmd["id"])
    return {"agentStateRes": render(res), "skipped": skipped}


def stop(s, cmd):
    s.outbound.put(
        cvms_pb2.ServerStreamMessage(
            stopComputation=cvms_pb2.StopComputation(computation_id=cmd["computation_id"])
        )
    )
    res, skipped = s.expect("stopComputationRes")
    return {"stopComputationRes": render(res), "skipped": skipped}


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    cvms_pb2_grpc.add_ServiceServicer_to_server(Cvms(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    session = None
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "session":
                session = sessions.get(timeout=WAIT)
                out = {"job_id": session.job_id}
            else:
                out = {"manifest": manifest, "state": state, "stop": stop}[cmd["cmd"]](
                    session, cmd
                )
        except Exception as e:  # reported to the test, which fails on it
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)
    if session is not None:
        session.outbound.put(None)
    server.stop(0)
    os._exit(0)


main()
