#!/usr/bin/env python3
"""classic_server.py — our rendition of the classic Python select() chat server.

The well-known tutorial program, written again for chatsock's interop tests: one select()
loop over a list of sockets, a dict from client socket to its username frame, a 10-byte
length header in front of every payload. A client's first frame is its username; every
later frame is relayed to every *other* client as the sender's username frame followed by
the message frame, each with the header bytes exactly as the sender sent them. There is no
welcome, no join/leave notice and no reserved name: that is the classic behaviour.

    python3 classic_server.py [host] [port]        defaults: 127.0.0.1 1234

Port 0 lets the OS choose; the first line printed says which, e.g.
"Listening for connections on 127.0.0.1:40123...". Liberties taken, none visible on the
wire: frames are read whole even when TCP delivers them in pieces, a client that stalls in
the middle of a frame is dropped after a few seconds instead of freezing the server, closed
connections are closed at once, and Ctrl+C exits quietly.
"""
import select
import socket
import sys

HEADER_LENGTH = 10
STALL_TIMEOUT = 5.0  # seconds a client may take to finish a frame it has started


def recv_exactly(sock, count):
    """count bytes, or fewer if the connection ends first."""
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def receive_message(client_socket):
    """The next frame as {'header': ..., 'data': ...}, or False when the client is gone."""
    try:
        message_header = recv_exactly(client_socket, HEADER_LENGTH)
        if len(message_header) < HEADER_LENGTH:
            return False
        message_length = int(message_header.decode("utf-8").strip())
        data = recv_exactly(client_socket, message_length)
        if len(data) < message_length:
            return False
        return {"header": message_header, "data": data}
    except (OSError, ValueError):
        return False


def text(frame):
    return frame["data"].decode("utf-8", errors="backslashreplace")


def main(argv):
    sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")
    ip = argv[1] if len(argv) > 1 else "127.0.0.1"
    port = int(argv[2]) if len(argv) > 2 else 1234

    server_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server_socket.bind((ip, port))
    server_socket.listen()
    ip, port = server_socket.getsockname()[:2]

    sockets_list = [server_socket]
    clients = {}  # client socket -> its username frame
    print(f"Listening for connections on {ip}:{port}...", flush=True)

    def drop(client_socket):
        sockets_list.remove(client_socket)
        clients.pop(client_socket, None)
        client_socket.close()

    while True:
        read_sockets, _, exception_sockets = select.select(sockets_list, [], sockets_list)
        for notified_socket in read_sockets:
            if notified_socket is server_socket:
                client_socket, client_address = server_socket.accept()
                client_socket.settimeout(STALL_TIMEOUT)
                user = receive_message(client_socket)  # the username comes first
                if user is False:
                    client_socket.close()
                    continue
                sockets_list.append(client_socket)
                clients[client_socket] = user
                print("Accepted new connection from {}:{}, username: {}".format(
                    *client_address[:2], text(user)), flush=True)
                continue
            if notified_socket not in clients:  # dropped earlier in this round
                continue
            message = receive_message(notified_socket)
            if message is False:
                print(f"Closed connection from: {text(clients[notified_socket])}", flush=True)
                drop(notified_socket)
                continue
            user = clients[notified_socket]
            print(f"Received message from {text(user)}: {text(message)}", flush=True)
            for client_socket in list(clients):
                if client_socket is not notified_socket:
                    try:
                        client_socket.sendall(user["header"] + user["data"] +
                                              message["header"] + message["data"])
                    except OSError:
                        pass  # its own read will notice it is gone
        for notified_socket in exception_sockets:
            if notified_socket in clients:
                drop(notified_socket)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except KeyboardInterrupt:
        pass
