// The Express app of the peer benchmark (scripts/bench_peers.py), served
// the same way by PM2 (cluster mode, wait_ready) and by the supervisor
// (--workers N). express comes from the benchmark's own node_modules
// (target/peers, installed by `scripts/bench_peers.py --setup`).
//
// It answers every request with "version V pid P": V is read once, at
// start, from $PEER_VERSION_FILE, so the benchmark tells the new code from
// the old. Under the supervisor it serves the inherited listener (fd 3,
// LISTEN_PID checked) and is probed for readiness (--ready http:/: Node has
// no Unix datagram socket for READY=1). Under PM2 it listens on $PORT
// through Node's cluster module and tells PM2 it is ready with
// process.send("ready") (wait_ready). On SIGTERM (the supervisor) or SIGINT
// (PM2) it stops accepting, closes idle keep-alive connections (Node 19+)
// and exits once the requests in flight are answered.
"use strict";
const fs = require("fs");
const express = require("express");

let version = "0";
try {
  version = fs.readFileSync(process.env.PEER_VERSION_FILE, "utf8").trim();
} catch (e) {}
const body = `version ${version} pid ${process.pid}\n`;
const app = express();
app.get("/", (req, res) => res.type("text/plain").send(body));

let server;
if (process.env.LISTEN_FDS) {
  if (process.env.LISTEN_PID !== String(process.pid)) {
    console.error("server.js: LISTEN_PID is not this process");
    process.exit(1);
  }
  server = app.listen({ fd: 3, backlog: 65535 });
} else {
  server = app.listen(Number(process.env.PORT), "127.0.0.1", () => {
    if (process.send) process.send("ready");
  });
}
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
