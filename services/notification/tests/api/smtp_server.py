"""A real SMTP server for the notification tests (aiosmtpd).

    smtp_server.py --maildir DIR [--refuse N]

Binds 127.0.0.1 on a free port and prints `listening on PORT` once it accepts. Every
accepted message is written to DIR/<n>.eml (written to a temporary name, then renamed, so
a reader never sees half a message). With --refuse N the first N messages are refused with
`451 4.3.0 try again later` at DATA, as a server that is overloaded would. The file
DIR/refused counts the refusals. Stops on stdin's end, so it never outlives its test.
"""

import argparse
import asyncio
import os
import socket
import sys

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, maildir, refuse):
        self.maildir = maildir
        self.refuse = refuse
        self.refused = 0
        self.accepted = 0

    async def handle_DATA(self, server, session, envelope):
        if self.refused < self.refuse:
            self.refused += 1
            with open(os.path.join(self.maildir, "refused"), "w") as f:
                f.write(str(self.refused))
            return "451 4.3.0 try again later"
        self.accepted += 1
        name = os.path.join(self.maildir, f"{self.accepted}.eml")
        with open(name + ".tmp", "wb") as f:
            f.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.original_content)
        os.rename(name + ".tmp", name)
        return "250 OK"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--refuse", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.maildir, exist_ok=True)
    port = free_port()
    controller = Controller(
        Handler(args.maildir, args.refuse), hostname="127.0.0.1", port=port
    )
    controller.start()
    print(f"listening on {port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
