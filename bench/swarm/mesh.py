# Helper of bench/swarm/mesh.sh (run inside each namespace).
# mesh.py serve PORT | send HOSTS... : an all-to-all TCP load on the shaped bench network.
# serve: accept connections, read and discard (bench/swarm/mesh.sh counts the bytes
# at the interfaces).
# send: open one connection to each host and write as fast as the link takes, for DUR seconds.
import socket, sys, threading, time, signal, os
mode = sys.argv[1]
if mode == "serve":
    port = int(sys.argv[2]); total = [0]; lock = threading.Lock()
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", port)); s.listen(64)
    def rd(c):
        while True:
            b = c.recv(1 << 16)
            if not b: break
            with lock: total[0] += len(b)
    def done(*a):
        print(total[0], flush=True); os._exit(0)
    signal.signal(signal.SIGTERM, done)
    while True:
        c, _ = s.accept(); threading.Thread(target=rd, args=(c,), daemon=True).start()
else:
    dur = float(sys.argv[2]); hosts = sys.argv[3:]; buf = b"x" * (1 << 16); end = time.time() + dur
    def wr(h):
        c = socket.create_connection((h, 7777))
        c.settimeout(1)
        while time.time() < end:
            try: c.send(buf)
            except socket.timeout: pass
        c.close()
    ts = [threading.Thread(target=wr, args=(h,)) for h in hosts]
    [t.start() for t in ts]; [t.join() for t in ts]
