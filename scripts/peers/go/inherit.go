//go:build !tableflip

// The server on an inherited listener: from the supervisor (LISTEN_FDS,
// checked against LISTEN_PID, as systemd socket activation gives it) or from
// Server::Starter (SERVER_STARTER_PORT="ADDR=FD"). It sends READY=1 to
// $NOTIFY_SOCKET once it serves (where there is one, unless $PEER_NO_NOTIFY
// is set) and drains on SIGTERM.
package main

import (
	"context"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

func inherited() uintptr {
	if os.Getenv("LISTEN_FDS") != "" {
		if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
			log.Fatal("LISTEN_PID is not this process")
		}
		return 3
	}
	// Server::Starter: "127.0.0.1:8080=3" (several are separated by ';').
	if spec := os.Getenv("SERVER_STARTER_PORT"); spec != "" {
		first := strings.Split(spec, ";")[0]
		if i := strings.LastIndexByte(first, '='); i >= 0 {
			if fd, err := strconv.Atoi(first[i+1:]); err == nil {
				return uintptr(fd)
			}
		}
		log.Fatalf("cannot read SERVER_STARTER_PORT=%q", spec)
	}
	log.Fatal("no inherited listener (LISTEN_FDS or SERVER_STARTER_PORT)")
	return 0
}

func main() {
	f := os.NewFile(inherited(), "listener")
	ln, err := net.FileListener(f) // a duplicate: close the original
	if err != nil {
		log.Fatal(err)
	}
	f.Close()
	srv := &http.Server{Handler: handler()}

	sigterm := make(chan os.Signal, 1)
	signal.Notify(sigterm, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	notify("READY=1")

	<-sigterm
	notify("STOPPING=1")
	if err := srv.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
	<-served
}

// notify sends one sd_notify datagram to $NOTIFY_SOCKET, if set and not
// switched off by $PEER_NO_NOTIFY (a server that cannot send READY=1, proved
// ready by the supervisor's probe instead).
func notify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" || os.Getenv("PEER_NO_NOTIFY") != "" {
		return
	}
	conn, err := net.Dial("unixgram", path)
	if err != nil {
		log.Printf("notify: %v", err)
		return
	}
	defer conn.Close()
	conn.Write([]byte(state))
}
