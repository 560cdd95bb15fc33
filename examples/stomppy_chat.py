"""alice sends bob a message through a node started with `make run`, using stomp.py over WebSocket.

    .venv/bin/python examples/stomppy_chat.py
"""

import os
import threading

import stomp

received = threading.Event()


class Printer(stomp.ConnectionListener):
    def on_message(self, frame):
        print(f"bob got {frame.body!r} on {frame.headers['destination']}")
        received.set()


def connect(login: str, listener=None) -> stomp.WSConnection:
    conn = stomp.WSConnection([("127.0.0.1", int(os.environ.get("STOMPGATE_PORT", 8080)))], ws_path="/ws")
    if listener:
        conn.set_listener("", listener)
    conn.connect(login=login, passcode="", wait=True)
    return conn


bob = connect("bob", Printer())
bob.subscribe("/user/queue/chat", id="1")
alice = connect("alice")
alice.send("/user/bob/queue/chat", "hi bob, it's alice")
assert received.wait(5), "no message within 5 s"
alice.disconnect()
bob.disconnect()
