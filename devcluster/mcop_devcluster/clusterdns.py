"""The real node's cluster DNS: Service names to ClusterIPs, on the node's local-only address.

Answers ``<service>.<namespace>.svc.<domain>`` A queries with the Service's ClusterIP (read from the
API server every second) and every other name with NXDOMAIN at once: there is no upstream, so no
query ever leaves the machine. Enough for what the chart's pods resolve (``montecarlo-redis.ns.svc``
through the search path the kubelet writes). UDP only.

    python -m mcop_devcluster.clusterdns --kubeconfig K --listen ADDRESS [--domain cluster.local]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

from mcop_devcluster.rest import RestClient

NOERROR, NXDOMAIN, NOTIMP = 0, 3, 4
TYPE_A, CLASS_IN = 1, 1
TTL = 5


def parse_question(packet: bytes) -> tuple[int, int, str, int, int] | None:
    """(id, flags, name, qtype, end of question) of a query, or None if it cannot be read."""
    if len(packet) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount != 1:
        return None
    labels, offset = [], 12
    while offset < len(packet):
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length > 63:
            return None  # compression in a question: not from a resolver
        labels.append(packet[offset : offset + length].decode("ascii", "replace").lower())
        offset += length
    if offset + 4 > len(packet):
        return None
    qtype = struct.unpack("!H", packet[offset : offset + 2])[0]
    return ident, flags, ".".join(labels), qtype, offset + 4


def answer(packet: bytes, records: dict[str, str]) -> bytes | None:
    question = parse_question(packet)
    if question is None:
        return None
    ident, flags, name, qtype, end = question
    address = records.get(name)
    rcode = NOERROR if address is not None else NXDOMAIN
    answers = b""
    if address is not None and qtype == TYPE_A:
        answers = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4)
        answers += ipaddress.IPv4Address(address).packed
    # QR, opcode copied, AA, RD copied, RA.
    reply_flags = 0x8000 | (flags & 0x7900) | 0x0400 | 0x0080 | rcode
    header = struct.pack("!HHHHHH", ident, reply_flags, 1, 1 if answers else 0, 0, 0)
    return header + packet[12:end] + answers


def service_records(rest: RestClient, domain: str) -> dict[str, str]:
    records: dict[str, str] = {}
    for item in rest.get("/api/v1/services").get("items", []):
        ip = item.get("spec", {}).get("clusterIP")
        if ip and ip != "None":
            meta = item["metadata"]
            records[f"{meta['name']}.{meta['namespace']}.svc.{domain}"] = ip
    return records


def serve(rest: RestClient, listen: str, domain: str, ready_file: Path | None) -> None:
    records: dict[str, str] = {}

    def refresh() -> None:
        nonlocal records
        while True:
            with contextlib.suppress(Exception):  # the API server restarting: keep the answers
                records = service_records(rest, domain)
            time.sleep(1.0)

    records = service_records(rest, domain)
    threading.Thread(target=refresh, daemon=True).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((listen, 53))
        if ready_file is not None:
            ready_file.write_text("ready\n")
        while True:
            packet, peer = sock.recvfrom(512)
            reply = answer(packet, records)
            if reply is not None:
                sock.sendto(reply, peer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--domain", default="cluster.local")
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mcop-dns-"))
    serve(
        RestClient.from_kubeconfig(args.kubeconfig, folder=folder),
        args.listen,
        args.domain,
        args.ready_file,
    )


if __name__ == "__main__":
    main()
