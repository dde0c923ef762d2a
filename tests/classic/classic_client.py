#!/usr/bin/env python3
"""classic_client.py — our rendition of the classic Python socket-chat client.

The well-known tutorial program, written again for chatsock's interop tests: connect, send
the username as the first frame (10-byte left-aligned length header + UTF-8), then loop:
read a line of input, send it if it is not empty, then read the socket without blocking and
print every message as "user > message" until there is nothing more (EAGAIN). Messages
therefore appear only after a line of input (press Enter to check). When the server closes
the connection it prints "Connection closed by the server" and exits.

    python3 classic_client.py [host] [port] [username]   defaults: 127.0.0.1 1234, name asked

Made scriptable for tests: stdout is flushed after every line; the "name > " input prompt
is shown only on a terminal; end of input closes the connection and exits 0; a closed
connection or a read error exits 1. A frame that has started arriving is read whole, even
if TCP delivers it in pieces. None of this changes what goes on the wire.
"""
import errno
import select
import socket
import sys

HEADER_LENGTH = 10
FRAME_TIMEOUT = 5.0  # seconds to wait for the rest of a frame that has started arriving


def send_all(sock, data):
    """send() on a non-blocking socket, resumed until every byte is out."""
    while data:
        try:
            data = data[sock.send(data):]
        except BlockingIOError:
            select.select([], [sock], [], FRAME_TIMEOUT)


def recv_rest(sock, data, count):
    """Completes `data` to `count` bytes, waiting at most FRAME_TIMEOUT for each piece."""
    while len(data) < count:
        try:
            chunk = sock.recv(count - len(data))
        except BlockingIOError:
            if not select.select([sock], [], [], FRAME_TIMEOUT)[0]:
                raise OSError(errno.ETIMEDOUT, "incomplete frame from the server")
            continue
        if not chunk:
            raise OSError(errno.ECONNRESET, "connection closed in the middle of a frame")
        data += chunk
    return data


def encode(message):
    data = message.encode("utf-8", errors="surrogateescape")
    return f"{len(data):<{HEADER_LENGTH}}".encode("utf-8") + data


def main(argv):
    sys.stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
    sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")
    ip = argv[1] if len(argv) > 1 else "127.0.0.1"
    port = int(argv[2]) if len(argv) > 2 else 1234
    interactive = sys.stdin.isatty()
    if len(argv) > 3:
        my_username = argv[3]
    else:
        try:
            my_username = input("Username: ")
        except EOFError:
            return 1

    client_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client_socket.connect((ip, port))
    except OSError as e:
        print(f"Cannot connect to {ip}:{port}: {e.strerror or e}", file=sys.stderr, flush=True)
        return 1
    client_socket.setblocking(False)
    send_all(client_socket, encode(my_username))

    while True:
        try:
            message = input(f"{my_username} > " if interactive else "")
        except EOFError:
            client_socket.close()
            return 0
        if message:
            send_all(client_socket, encode(message))
        try:
            while True:  # everything received so far, then back to the keyboard
                username_header = client_socket.recv(HEADER_LENGTH)
                if not len(username_header):
                    print("Connection closed by the server", flush=True)
                    return 1
                username_header = recv_rest(client_socket, username_header, HEADER_LENGTH)
                username_length = int(username_header.decode("utf-8").strip())
                username = recv_rest(client_socket, b"", username_length).decode("utf-8", "replace")
                message_header = recv_rest(client_socket, b"", HEADER_LENGTH)
                message_length = int(message_header.decode("utf-8").strip())
                message = recv_rest(client_socket, b"", message_length).decode("utf-8", "replace")
                print(f"{username} > {message}", flush=True)
        except IOError as e:
            if e.errno != errno.EAGAIN and e.errno != errno.EWOULDBLOCK:
                print(f"Reading error: {e}", flush=True)
                return 1
            continue
        except Exception as e:
            print(f"Reading error: {e}", flush=True)
            return 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:
        sys.exit(130)
