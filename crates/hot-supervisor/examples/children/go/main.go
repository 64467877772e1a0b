// A Go net/http server that takes its listener from the supervisor.
//
//	go build -o go-child . && supervisor -l 127.0.0.1:8080 --ready notify -- ./go-child
//
// It serves the listener at fd 3 (refusing to start unless LISTEN_PID is its
// own pid), answers every request with "generation <G> pid <PID>", sends
// READY=1 to NOTIFY_SOCKET once it serves, and on SIGTERM stops accepting,
// finishes the requests in flight and exits 0. Keep-alives are off, so a
// drain never has to close an idle connection that a client may be about to
// reuse.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") == "" {
		log.Fatal("no inherited listener (LISTEN_PID/LISTEN_FDS): run me under the supervisor")
	}
	// FileListener works on a duplicate; close the original.
	f := os.NewFile(3, "listener")
	ln, err := net.FileListener(f)
	if err != nil {
		log.Fatal(err)
	}
	f.Close()

	generation := os.Getenv("SUPERVISOR_GENERATION")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "generation %s pid %d\n", generation, os.Getpid())
	})}
	srv.SetKeepAlivesEnabled(false)

	// Taken over before READY=1: from then on SIGTERM means "drain".
	sigterm := make(chan os.Signal, 1)
	signal.Notify(sigterm, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	notify("READY=1")

	<-sigterm
	notify("STOPPING=1")
	// Closes this process's copy of the listener (never shutdown(2): the
	// socket is shared) and waits for the requests in flight.
	if err := srv.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
	if err := <-served; err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// notify sends one sd_notify datagram to $NOTIFY_SOCKET (Go maps a leading
// "@" to the abstract namespace).
func notify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	conn, err := net.Dial("unixgram", path)
	if err != nil {
		log.Printf("notify: %v", err)
		return
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		log.Printf("notify: %v", err)
	}
}
