// An express app on the supervisor's socket.
//
//   npm install          (once, in this folder: express is its only dependency)
//   supervisor -l 127.0.0.1:8080 --ready http:/ -- node examples/children/express/server.js
//
// express's app.listen() passes its arguments to Node's server.listen, so
// { fd: 3 } takes the inherited listener (Node reads no LISTEN_* variable;
// this file checks LISTEN_PID itself). Node cannot send READY=1 (no Unix
// datagram sockets), so --ready http:/ probes the new generation through its
// own socket. On SIGTERM, server.close() stops accepting and Node exits once
// the requests in flight are answered; since Node 19 close() also closes idle
// keep-alive connections at once.
"use strict";
const express = require("express");

if (process.env.LISTEN_PID !== String(process.pid) || !(Number(process.env.LISTEN_FDS) >= 1)) {
  console.error("server.js: no inherited listener (LISTEN_PID/LISTEN_FDS): run me under the supervisor");
  process.exit(1);
}
const generation = process.env.SUPERVISOR_GENERATION;
const app = express();
app.get("/", (req, res) => res.type("text/plain").send(`generation ${generation} pid ${process.pid}\n`));

// The backlog: Node calls listen(2) again on the fd; 65535 is capped at
// net.core.somaxconn, the supervisor's default.
const server = app.listen({ fd: 3, backlog: 65535 });
process.on("SIGTERM", () => server.close());
