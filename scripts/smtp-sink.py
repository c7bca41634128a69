#!/usr/bin/env python3
"""A minimal SMTP server for the walk-throughs: accepts every mail on 127.0.0.1:PORT and writes
each one to DIR/<n>.eml, the envelope recipient on its first line (`To-Envelope: addr`).

Usage: smtp-sink.py PORT DIR   (runs until killed)
"""
import os
import socketserver
import sys

PORT, DIR = int(sys.argv[1]), sys.argv[2]
os.makedirs(DIR, exist_ok=True)
count = 0


class Session(socketserver.StreamRequestHandler):
    def send(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        global count
        self.send("220 sink ESMTP")
        to = ""
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            upper = line.upper()
            if upper.startswith(("EHLO", "HELO")):
                self.send("250-sink")
                self.send("250 8BITMIME")
            elif upper.startswith("RCPT TO:"):
                to = line[8:].strip().strip("<>")
                self.send("250 ok")
            elif upper.startswith("DATA"):
                self.send("354 go ahead")
                data = []
                while True:
                    part = self.rfile.readline().decode("utf-8", "replace").rstrip("\r\n")
                    if part == ".":
                        break
                    data.append(part)
                count += 1
                path = os.path.join(DIR, f"{count}.eml")
                with open(path + ".tmp", "w") as f:
                    f.write(f"To-Envelope: {to}\n" + "\n".join(data) + "\n")
                os.rename(path + ".tmp", path)
                self.send("250 queued")
            elif upper.startswith("QUIT"):
                self.send("221 bye")
                return
            else:
                self.send("250 ok")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


Server(("127.0.0.1", PORT), Session).serve_forever()
