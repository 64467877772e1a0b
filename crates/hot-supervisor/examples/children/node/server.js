// A Node HTTP server that takes its listener from the supervisor.
//
//   supervisor -l 127.0.0.1:8080 --ready delay:500ms -- node server.js
//
// It serves the listener at fd 3 (refusing to start unless LISTEN_PID is its
// own pid), answers every request with "generation <G> pid <PID>", and on
// SIGTERM stops accepting, finishes the requests in flight and exits 0.
// Node has no Unix datagram sockets, so it cannot send READY=1 itself: use
// --ready delay:DUR. Every response says "Connection: close", so a drain
// never has to close an idle keep-alive connection that a client may be about
// to reuse.
"use strict";
const http = require("node:http");

if (process.env.LISTEN_PID !== String(process.pid) || !(Number(process.env.LISTEN_FDS) >= 1)) {
  console.error("server.js: no inherited listener (LISTEN_PID/LISTEN_FDS): run me under the supervisor");
  process.exit(1);
}
const generation = process.env.SUPERVISOR_GENERATION;

const server = http.createServer((req, res) => {
  res.setHeader("Content-Type", "text/plain");
  res.setHeader("Connection", "close");
  res.end(`generation ${generation} pid ${process.pid}\n`);
});
// Node calls listen(2) again on the fd, which sets the backlog of the shared
// socket (Node's default is 511). The kernel caps 65535 at
// net.core.somaxconn, the supervisor's default: pass your --backlog if you
// set one.
server.listen({ fd: 3 }, 65535);

// close() stops accepting (it closes this process's copy of the listener,
// never shutdown(2): the socket is shared); Node exits 0 once the requests
// in flight are done.
process.on("SIGTERM", () => server.close());
